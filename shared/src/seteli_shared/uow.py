"""The unit of work a use case receives (as cosmicpython's ``service_layer/unit_of_work.py``): a use case
works through its stores inside ``async with uow:`` and calls ``commit``; whatever it did not commit is
rolled back when the block ends. ``SessionUnitOfWork`` is one transaction of a SQLAlchemy session; a
test gives a fake one holding its state in memory, so that a rule that needs no database is tested
without one (``tests/unit/test_handlers.py`` in cosmicpython)."""
from __future__ import annotations

from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


class AbstractUnitOfWork:
    """``async with uow:`` ... ``await uow.commit()``; leaving the block without a commit rolls back."""

    committed: bool = False

    async def __aenter__(self) -> "AbstractUnitOfWork":
        self.committed = False
        await self._begin()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            if not self.committed:
                await self.rollback()
        finally:
            await self._end(exc)

    async def commit(self) -> None:
        await self._commit()
        self.committed = True

    async def _begin(self) -> None:
        """Open what the unit needs (a session, a connection)."""

    async def _end(self, exc: BaseException | None) -> None:
        """Give back what ``_begin`` opened (``exc``: what ended the block, if anything did)."""

    async def _commit(self) -> None:
        raise NotImplementedError

    async def rollback(self) -> None:
        raise NotImplementedError


class SessionUnitOfWork(AbstractUnitOfWork):
    """One transaction of a session from ``sessions`` (``self.session`` inside the block)."""

    session: AsyncSession

    def __init__(self, sessions: async_sessionmaker[AsyncSession]):
        self.sessions = sessions

    async def _begin(self) -> None:
        self.session = self.sessions()
        await self.session.begin()

    async def _end(self, exc: BaseException | None) -> None:
        await self.session.close()

    async def _commit(self) -> None:
        await self.session.commit()

    async def rollback(self) -> None:
        await self.session.rollback()
