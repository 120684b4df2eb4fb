"""Per-account download limits: simultaneous downloads and downloads per month, exact across instances.

An account with limits has a row in ``account_limits``; every charged download of that account locks
the row (``SELECT ... FOR UPDATE``) in an admission transaction of its own, committed just before the charge
(the charge is batched with other reads of its bucket, which an admission cannot join), so acquisitions
from any number of instances are serialised: the count of live leases and the monthly counter cannot
be overtaken.
A lease is renewed while its body streams and released when the body closes; a crashed instance's
leases stop counting when they expire (``STORAGE_DOWNLOAD_LEASE_SECONDS``).
Accounts without limits cost one primary-key lookup and nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from storage_core.db import transaction
from storage_core.errors import ConcurrentDownloadLimit, MonthlyDownloadLimit
from storage_core.models import AccountLimit, AccountMonthlyDownloads, DownloadLease
from storage_core.timeutil import now_us, seconds_to_next_month, year_month_of

log = logging.getLogger(__name__)

M = AccountMonthlyDownloads
# a slot frees when any download of the account ends: worth trying again soon
CONCURRENT_RETRY_AFTER = "1"


@dataclass(frozen=True, slots=True)
class Admission:
    """What a download took from its account's limits, so that it can be given back."""

    account: str
    lease_id: int | None
    year_month: str | None


class DownloadLimits:
    def __init__(self, session_factory: sessionmaker[Session], lease_seconds: int,
                 clock: Callable[[], int] = now_us):
        self.session_factory = session_factory
        self.lease_us = lease_seconds * 1_000_000
        self.clock = clock

    @property
    def renew_every_seconds(self) -> float:
        return self.lease_us / 3_000_000

    def admit_in(self, session: Session, account: str) -> Admission | None:
        """In the caller's admission transaction (committed before the charge, which runs in a transaction of
        its own): take a lease and a monthly download, or raise 429. If the charge then fails, the caller
        gives both back with ``release(admission, undo_monthly=True)``."""
        limit = session.scalar(select(AccountLimit).where(AccountLimit.account == account).with_for_update())
        if limit is None:
            return None
        now = self.clock()
        lease_id = year_month = None
        if limit.max_monthly_downloads is not None:
            year_month = year_month_of(now)
            counted = session.execute(
                update(M).where(M.account == account, M.year_month == year_month,
                                M.downloads < limit.max_monthly_downloads)
                .values(downloads=M.downloads + 1).execution_options(synchronize_session=False)
            ).rowcount
            if not counted:
                exists = session.scalar(select(M.downloads).where(M.account == account, M.year_month == year_month))
                if exists is not None or limit.max_monthly_downloads < 1:
                    raise MonthlyDownloadLimit(
                        f"account {account!r} reached its {limit.max_monthly_downloads} downloads this month",
                        headers={"Retry-After": str(seconds_to_next_month(now))})
                # the row lock above serialises this account, so this insert cannot race another
                session.execute(insert(M).values(account=account, year_month=year_month, downloads=1))
        if limit.max_concurrent_downloads is not None:
            active = session.scalar(
                select(func.count()).select_from(DownloadLease)
                .where(DownloadLease.account == account, DownloadLease.released_us.is_(None),
                       DownloadLease.expires_us > now))
            if active >= limit.max_concurrent_downloads:
                raise ConcurrentDownloadLimit(
                    f"account {account!r} already has {active} of {limit.max_concurrent_downloads} "
                    "simultaneous downloads", headers={"Retry-After": CONCURRENT_RETRY_AFTER})
            # acquired_us is read after the count: a lease released in between (its released_us read
            # before its commit) never appears to overlap this one, whatever the scheduler did
            lease_id = session.execute(
                insert(DownloadLease).values(account=account, acquired_us=self.clock(),
                                             expires_us=now + self.lease_us)
                .returning(DownloadLease.id)).scalar_one()
        return Admission(account, lease_id, year_month)

    def renew(self, admission: Admission) -> None:
        if admission.lease_id is None:
            return
        with transaction(self.session_factory) as session:
            session.execute(update(DownloadLease)
                            .where(DownloadLease.id == admission.lease_id, DownloadLease.released_us.is_(None))
                            .values(expires_us=self.clock() + self.lease_us))

    def release(self, admission: Admission, *, undo_monthly: bool = False) -> None:
        """The download ended; ``undo_monthly`` when it never delivered anything (it does not count)."""
        with transaction(self.session_factory) as session:
            if admission.lease_id is not None:
                session.execute(update(DownloadLease).where(DownloadLease.id == admission.lease_id)
                                .values(released_us=self.clock()))
            if undo_monthly and admission.year_month is not None:
                session.execute(update(M).where(M.account == admission.account, M.year_month == admission.year_month)
                                .values(downloads=M.downloads - 1))

    # ---- administration ------------------------------------------------------------------------------

    def set_limits(self, account: str, concurrent: int | None, monthly: int | None) -> dict[str, Any]:
        with transaction(self.session_factory) as session:
            if concurrent is None and monthly is None:
                session.execute(delete(AccountLimit).where(AccountLimit.account == account))
            else:
                limit = session.get(AccountLimit, account, with_for_update=True) or AccountLimit(account=account)
                limit.max_concurrent_downloads, limit.max_monthly_downloads = concurrent, monthly
                session.add(limit)
        return self.get_limits(account)

    def get_limits(self, account: str) -> dict[str, Any]:
        now = self.clock()
        with transaction(self.session_factory) as session:
            limit = session.get(AccountLimit, account)
            active = session.scalar(
                select(func.count()).select_from(DownloadLease)
                .where(DownloadLease.account == account, DownloadLease.released_us.is_(None),
                       DownloadLease.expires_us > now))
            monthly = session.scalar(select(M.downloads).where(M.account == account,
                                                               M.year_month == year_month_of(now)))
        return {
            "account": account,
            "max_concurrent_downloads": limit.max_concurrent_downloads if limit else None,
            "max_monthly_downloads": limit.max_monthly_downloads if limit else None,
            "active_downloads": active,
            "downloads_this_month": monthly or 0,
        }

    def forget_old_leases(self, older_than_us: int) -> int:
        """Remove leases released or expired before ``older_than_us`` (called by gc)."""
        with transaction(self.session_factory) as session:
            return session.execute(delete(DownloadLease).where(DownloadLease.expires_us < older_than_us)).rowcount
