"""Modem chat (hilkit.drivers.ppp.chat): a scripted fake modem and a manual clock."""

from __future__ import annotations

import random

import pytest

from hilkit.drivers.ppp.chat import (
    SAID_MAX,
    ChatDone,
    ChatError,
    ChatFailed,
    ChatRunner,
    ChatScript,
    ChatStep,
    hangup_script,
    parse_chat,
)

DIAL = "'' AT OK ATE0 OK AT+CGDCONT=1,\"IP\",\"internet\" OK ATD*99# CONNECT"


class FakeModem:
    """Answers each complete command line (CR-terminated) from a table; echoes if asked."""

    def __init__(self, answers: dict[str, str], echo: bool = True) -> None:
        self.answers = answers
        self.echo = echo
        self.heard: list[str] = []
        self._buf = b""

    def hear(self, data: bytes) -> bytes:
        self._buf += data
        out = b""
        if self.echo:
            out += data
        while b"\r" in self._buf:
            line, _, self._buf = self._buf.partition(b"\r")
            cmd = line.decode()
            self.heard.append(cmd)
            out += self.answers.get(cmd, "\r\nERROR\r\n").encode()
        return out


def converse(runner: ChatRunner, modem: FakeModem, now: float = 0.0) -> None:
    for _ in range(50):
        out = runner.take_output()
        if not out or runner.done:
            break
        reply = modem.hear(out)
        if reply:
            runner.feed(reply, now)


def test_parse_classic_string_keeps_double_quotes() -> None:
    s = parse_chat(DIAL)
    assert [(st.expect, st.send) for st in s.steps] == [
        ("", "AT"), ("OK", "ATE0"), ("OK", 'AT+CGDCONT=1,"IP","internet"'),
        ("OK", "ATD*99#"), ("CONNECT", None)]
    assert s.steps[2].wire_send() == b'AT+CGDCONT=1,"IP","internet"\r'


def test_parse_pairs_and_keywords() -> None:
    s = ChatScript.parse([["", "AT"], ["OK", "ATD*99#"], ["CONNECT"]], timeout_s=5)
    assert [(st.expect, st.send, st.timeout_s) for st in s.steps] == [
        ("", "AT", 5), ("OK", "ATD*99#", 5), ("CONNECT", None, 5)]
    s = parse_chat("ABORT 'NO SIGNAL' TIMEOUT 7 '' 'AT Z' OK 'x\\c'")
    assert "NO SIGNAL" in s.aborts and "BUSY" in s.aborts
    assert [(st.expect, st.send, st.timeout_s) for st in s.steps] == [
        ("", "AT Z", 7), ("OK", "x\\c", 7)]
    assert s.steps[1].wire_send() == b"x"
    with pytest.raises(ChatError):
        parse_chat("'' 'unterminated")
    with pytest.raises(ChatError):
        parse_chat([["a", "b", "c"]])
    with pytest.raises(ChatError):
        parse_chat("")
    with pytest.raises(ChatError):
        parse_chat("TIMEOUT soon")


def test_dial_succeeds_and_keeps_what_follows_connect() -> None:
    modem = FakeModem({"AT": "\r\nOK\r\n", "ATE0": "\r\nOK\r\n",
                       'AT+CGDCONT=1,"IP","internet"': "\r\nOK\r\n",
                       "ATD*99#": "\r\nCONNECT 115200\r\n~\xff}#"})
    r = parse_chat(DIAL).runner(0.0)
    converse(r, modem)
    assert modem.heard == ["AT", "ATE0", 'AT+CGDCONT=1,"IP","internet"', "ATD*99#"]
    assert isinstance(r.outcome, ChatDone)
    assert r.outcome.leftover.endswith("~\xff}#".encode())
    assert r.next_deadline() is None


def test_expectation_split_across_reads() -> None:
    r = ChatScript([ChatStep("", "AT"), ChatStep("CONNECT")]).runner(0)
    assert r.take_output() == b"AT\r"
    for piece in (b"\r\nCON", b"N", b"ECT 9600\r\n"):
        r.feed(piece, 1)
    assert isinstance(r.outcome, ChatDone)


def test_timeout_on_manual_clock_names_step_and_last_line() -> None:
    r = ChatScript([ChatStep("", "AT", 2.0), ChatStep("OK", "ATD*99#", 2.0),
                    ChatStep("CONNECT", None, 30.0)]).runner(1000.0)
    assert r.take_output() == b"AT\r"
    r.feed(b"AT\r\r\nOK\r\n", 1100.0)
    assert r.take_output() == b"ATD*99#\r"
    assert r.next_deadline() == 1100.0 + 30_000
    r.feed(b"\r\nRINGING\r\n", 2000.0)
    r.poll(1100.0 + 29_999)
    assert r.outcome is None
    r.poll(1100.0 + 30_000)
    out = r.outcome
    assert isinstance(out, ChatFailed)
    assert out.step_index == 2 and "CONNECT" in out.step_description
    assert "timeout after 30 s" in out.reason
    assert out.modem_said == "RINGING"
    assert "chat step 2" in str(out) and "RINGING" in str(out)


def test_abort_strings() -> None:
    for word in ("NO CARRIER", "BUSY", "NO DIALTONE", "NO ANSWER", "ERROR"):
        r = parse_chat(DIAL).runner(0)
        modem = FakeModem({"AT": "\r\nOK\r\n", "ATE0": "\r\nOK\r\n",
                           'AT+CGDCONT=1,"IP","internet"': "\r\nOK\r\n",
                           "ATD*99#": f"\r\n{word}\r\n"}, echo=False)
        converse(r, modem)
        out = r.outcome
        assert isinstance(out, ChatFailed), word
        assert out.step_index == 4 and word in out.reason and out.modem_said == word


def test_earliest_of_abort_and_expectation_wins() -> None:
    r = ChatScript([ChatStep("", "AT"), ChatStep("OK", "ATD1"),
                    ChatStep("CONNECT")]).runner(0)
    r.take_output()
    r.feed(b"\r\nOK\r\n\r\nBUSY\r\n", 0)  # OK first: the dial goes out, then BUSY aborts it
    assert r.take_output() == b"ATD1\r"
    assert isinstance(r.outcome, ChatFailed) and r.outcome.step_index == 2


def test_hangup_script_guard_times() -> None:
    r = hangup_script(guard_s=1.0, timeout_s=3.0).runner(0)
    assert r.take_output() == b"" and r.next_deadline() == 1000.0
    r.feed(b"~junk~", 500)  # PPP still on the line during the guard time
    r.poll(999)
    assert r.take_output() == b""
    r.poll(1000)
    assert r.take_output() == b"+++"
    r.feed(b"\r\nOK\r\n", 2100)
    assert r.take_output() == b"ATH\r"
    r.feed(b"\r\nOK\r\n", 2200)
    assert isinstance(r.outcome, ChatDone)


def test_hangup_without_answer_still_sends_ath() -> None:
    r = hangup_script(guard_s=1.0, timeout_s=3.0).runner(0)
    r.poll(1000)
    assert r.take_output() == b"+++"
    r.poll(1000 + 4000)  # no OK: optional, on to ATH
    assert r.take_output() == b"ATH\r"
    r.poll(1000 + 4000 + 3000)
    assert isinstance(r.outcome, ChatDone)


def test_garbage_corpus_never_raises_and_stays_bounded() -> None:
    rng = random.Random(1662)
    script = parse_chat(DIAL)
    pieces = [b"\r", b"\n", b"OK", b"ERR", b"\x00", b"\xff" * 40, b"CONNECT"[:3], b"~}"]
    for case in range(300):
        r = script.runner(0)
        now = 0.0
        for _ in range(rng.randrange(1, 40)):
            if rng.random() < 0.5:
                data = rng.randbytes(rng.randrange(0, 3000))
            else:
                data = b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 30)))
            now += rng.randrange(0, 5000)
            r.feed(data, now)
            r.poll(now)
            r.take_output()
            assert len(r._match.buf) <= 64, case
            assert len(r._line) <= 256
            if isinstance(r.outcome, ChatFailed):
                assert len(r.outcome.modem_said) <= SAID_MAX
                assert r.outcome.modem_said.isprintable()
            if r.done:
                break
