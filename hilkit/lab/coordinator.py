"""A labgrid coordinator through labgrid's own client session, and a place's power through
labgrid's own power driver -- the one module that imports labgrid (the ``[lab]`` extra).

It uses what ``labgrid-client`` and labgrid's ``RemotePlace`` resource use:
``labgrid.remote.client.ClientSession`` (started as ``start_session`` does, with a
time limit added), its ``places`` and ``resources`` (the coordinator's view,
kept current by the session) and its gRPC stub for the place and reservation
requests (``CreateReservation``, ``PollReservation``, ``CancelReservation``,
``AcquirePlace``, ``ReleasePlace`` with ``fromuser``, ``GetReservations``).
Every failure is a ``LabError`` of one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from hilkit.lab.place import LabError, PlaceInfo, ReservationInfo, Resource

T = TypeVar("T")
CONNECT_TIMEOUT_S = 10.0
CALL_TIMEOUT_S = 30.0


def labgrid_missing() -> str | None:
    """Why labgrid cannot be used here, or None."""
    try:
        import labgrid.remote.client  # noqa: F401
    except ImportError as e:
        return (f"labgrid is not installed ({e}); install the lab extra: "
                "pip install 'hilkit[lab]' (./install does)")
    return None


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """labgrid logs connection trouble on the root logger; we say it in one line instead."""
    root = logging.getLogger()
    if root.handlers:
        yield
        return
    handler = logging.NullHandler()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)


class LabgridCoordinator:
    """A session with the coordinator at ``address`` (HOST:PORT); ``close()`` it."""

    def __init__(self, address: str, *, timeout: float = CONNECT_TIMEOUT_S) -> None:
        why = labgrid_missing()
        if why:
            raise LabError(why)
        from labgrid.remote.client import ClientSession

        self.address = address
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)  # gRPC binds the channel to the current loop
        self._session: Any = None
        with _quiet_root_logger():
            try:
                session = ClientSession(address, self._loop)
                self._session = session
                self._run(session.start(), timeout)
            except (LabError, Exception) as e:
                self.close()
                raise LabError(f"cannot reach the labgrid coordinator at {address} ({_why(e)}); "
                               f"check it runs and answers: labgrid-client -x {address} places"
                               ) from None
        self.me = f"{session.gethostname()}/{session.getuser()}"

    # -- plumbing --

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT_S) -> T:
        try:
            return self._loop.run_until_complete(asyncio.wait_for(coro, timeout))
        except TimeoutError:
            raise LabError(f"the labgrid coordinator at {self.address} did not answer within "
                           f"{timeout:.0f} s") from None

    def _call(self, what: str, coro: Coroutine[Any, Any, T]) -> T:
        import grpc

        with _quiet_root_logger():
            try:
                result = self._run(coro)
                self._run(self._session.sync_with_coordinator())
                return result
            except grpc.aio.AioRpcError as e:
                raise LabError(f"{what}: {e.details()}") from None

    def close(self) -> None:
        s, self._session = self._session, None
        if s is not None:
            with _quiet_root_logger(), contextlib.suppress(Exception):
                if getattr(s, "pump_task", None) is not None:
                    self._run(s.stop(), 5)
                self._run(s.close(), 5)
        if not self._loop.is_closed():
            with _quiet_root_logger(), contextlib.suppress(Exception):
                pending = asyncio.all_tasks(self._loop)
                for task in pending:
                    task.cancel()
                self._loop.run_until_complete(
                    asyncio.gather(*pending, asyncio.sleep(0.05), return_exceptions=True))
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()
            asyncio.set_event_loop(None)

    def __enter__(self) -> LabgridCoordinator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the Coordinator protocol --

    def places(self) -> dict[str, PlaceInfo]:
        s = self._session
        self._run(s.sync_with_coordinator())
        out: dict[str, PlaceInfo] = {}
        for name, p in s.places.items():
            resources: list[Resource] = []
            for exporter, groups in s.resources.items():
                for group_name, group in groups.items():
                    for res_name, r in group.items():
                        path = (exporter, group_name, r.cls, res_name)
                        if p.hasmatch(path):
                            resources.append(Resource(path=path, params=dict(r.args),
                                                      avail=bool(r.avail),
                                                      extra=dict(r.extra or {})))
            out[name] = PlaceInfo(name=name, tags=dict(p.tags), acquired=p.acquired or None,
                                  reservation=p.reservation or None,
                                  changed=float(p.changed or 0.0), resources=tuple(resources))
        return out

    def reservations(self) -> dict[str, ReservationInfo]:
        from labgrid.remote.common import Reservation
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        resp = self._call("reservations", self._session.stub.GetReservations(
            pb.GetReservationsRequest()))
        out = {}
        for r in resp.reservations:
            res = _info(Reservation.from_pb2(r))
            out[res.token] = res
        return out

    def reserve(self, place: str) -> str:
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        request = pb.CreateReservationRequest(
            filters={"main": pb.Reservation.Filter(filter={"name": place})}, prio=0.0)
        resp = self._call(f"place {place}: reservation",
                          self._session.stub.CreateReservation(request))
        return str(resp.reservation.token)

    def poll(self, token: str) -> ReservationInfo:
        from labgrid.remote.common import Reservation
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        resp = self._call(f"reservation {token}", self._session.stub.PollReservation(
            pb.PollReservationRequest(token=token)))
        return _info(Reservation.from_pb2(resp.reservation))

    def cancel(self, token: str) -> None:
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        self._call(f"reservation {token}", self._session.stub.CancelReservation(
            pb.CancelReservationRequest(token=token)))

    def acquire(self, place: str) -> None:
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        self._call(f"place {place}", self._session.stub.AcquirePlace(
            pb.AcquirePlaceRequest(placename=place)))

    def release(self, place: str) -> None:
        """Unlock ``place`` if this client (``me``) still holds it."""
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        self._call(f"place {place}", self._session.stub.ReleasePlace(
            pb.ReleasePlaceRequest(placename=place, fromuser=self.me)))


def _info(res: Any) -> ReservationInfo:
    places = [n for group in res.allocations.values() for n in group]
    return ReservationInfo(token=res.token, owner=res.owner, state=res.state.name,
                           place=places[0] if places else None)


def _why(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__).removeprefix("Error: ")


class LabgridPower:
    """A place's ``NetworkPowerPort`` switched by labgrid's ``NetworkPowerDriver``: the
    resource as the coordinator described it (its ``model``, ``host``, ``index`` and the
    exporter's proxy settings, so ``LG_PROXY`` and exporters behind a proxy work as for
    ``labgrid-client power``), on a labgrid ``Target`` of the place's name."""

    def __init__(self, place: str, resource: Resource) -> None:
        why = labgrid_missing()
        if why:
            raise LabError(why)
        from labgrid import Target
        from labgrid.driver import NetworkPowerDriver
        from labgrid.resource import NetworkPowerPort

        p = resource.params
        try:
            self._target = Target(place)
            port = NetworkPowerPort(self._target, name=None, model=str(p.get("model")),
                                    host=str(p.get("host")), index=str(p.get("index")))
            port.extra = dict(resource.extra)
            self._driver = NetworkPowerDriver(self._target, name=None)
            self._target.activate(self._driver)
        except Exception as e:  # an unknown model, a bad index: labgrid says which
            raise LabError(f"place {place}: labgrid cannot drive {resource} "
                           f"({_why(e)})") from None

    def on(self) -> None:
        self._driver.on()

    def off(self) -> None:
        self._driver.off()

    def get(self) -> bool:
        return bool(self._driver.get())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._target.deactivate_all_drivers()
