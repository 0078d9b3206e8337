"""Developer tasks. Logic lives in the package; these only call it."""

from invoke import Context, task


@task
def test(c: Context) -> None:
    """Run the whole test suite (unit + integration against the Linux kernel)."""
    c.run("python -m pytest -q -p no:cacheprovider", pty=False)


@task
def lint(c: Context) -> None:
    """ruff and mypy --strict."""
    c.run("ruff check .")
    c.run("mypy")


@task
def bench(c: Context) -> None:
    """Figures: ping, flood, UDP, idle CPU, RSS; TCP goodput, loss, conn/s, RSS per connection."""
    c.run("python bench/core.py", pty=False)
    c.run("python bench/tcp.py", pty=False)


@task
def demo(c: Context) -> None:
    """picoTCP's README ping example against the kernel on tap0, in a private namespace."""
    c.run("python -m hilkit.demo examples/ping.py", pty=False)
