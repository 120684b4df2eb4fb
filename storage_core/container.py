"""The dependency-injection container: settings, database, plugin registry and services of one process."""

from __future__ import annotations

from collections.abc import Callable

from dependency_injector import containers, providers

from profiles import is_active
from storage_core.auth import AccessPolicy, Authenticator
from storage_core.db import make_engine, make_session_factory
from storage_core.plugin import PluginRegistry
from storage_core.services.access_keys import AccessKeyService
from storage_core.services.buckets import BucketService
from storage_core.services.cache import RestoreCache
from storage_core.services.content import ContentStore
from storage_core.services.downloads import DownloadService
from storage_core.services.events import EventOutbox, WebhookSender
from storage_core.services.files import AvailabilityService, FileService
from storage_core.services.gc import GarbageCollector
from storage_core.services.health import HealthService
from storage_core.services.limits import DownloadLimits
from storage_core.services.locations import LocationService
from storage_core.services.multipart import MultipartService
from storage_core.services.objects import ObjectService
from storage_core.services.permissions import PermissionService
from storage_core.services.quota import QuotaService
from storage_core.services.resolve import Resolver
from storage_core.services.restore import RestoreService, Wakeup
from storage_core.services.restore_jobs import RestoreWorker
from storage_core.services.scrub import Scrubber
from storage_core.services.sources import PluginCache
from storage_core.services.uploads import UploadService
from storage_core.settings import Settings
from storage_core.timeutil import now_us


class Container(containers.DeclarativeContainer):
    settings = providers.Singleton(Settings.from_env)
    # microseconds since the epoch; tests override it to move across months
    clock = providers.Object(now_us)

    engine = providers.Singleton(make_engine, settings)
    session_factory = providers.Singleton(make_session_factory, engine)
    # autocommit connections of their own pool: the download path's resolving SELECT, and the combined
    # charges, which begin and commit their transactions themselves
    autocommit_engine = providers.Singleton(make_engine, settings, autocommit=True)

    authenticator = providers.Singleton(Authenticator, settings)
    access_policy = providers.Singleton(AccessPolicy)
    access_key_service = providers.Singleton(AccessKeyService, session_factory, autocommit_engine, settings)
    permission_service = providers.Singleton(PermissionService, session_factory, access_policy, authenticator, clock)

    plugin_registry = providers.Singleton(PluginRegistry.from_entry_points)
    plugin_cache = providers.Singleton(PluginCache, plugin_registry)
    content_store = providers.Singleton(ContentStore, session_factory, plugin_cache)

    quota_service = providers.Singleton(QuotaService, session_factory, clock, autocommit_engine)
    download_limits = providers.Singleton(DownloadLimits, session_factory, settings.provided.lease_seconds, clock)
    resolver = providers.Singleton(Resolver, autocommit_engine, plugin_cache, access_policy, clock)
    restore_cache = providers.Singleton(RestoreCache, session_factory, content_store,
                                        settings.provided.lease_seconds, clock)
    # wakes this process's restore loops when a request creates jobs
    restore_wakeup = providers.Singleton(Wakeup)
    restore_service = providers.Singleton(RestoreService, session_factory, plugin_cache, access_policy, settings,
                                          clock, restore_wakeup, autocommit_engine)
    download_service = providers.Singleton(DownloadService, session_factory, resolver, content_store, quota_service,
                                           download_limits, settings.provided.verify_reads,
                                           settings.provided.public_max_age, restore=restore_service,
                                           cache=restore_cache, restore_on_read=settings.provided.restore_on_read)
    availability_service = providers.Singleton(AvailabilityService, restore_service)
    # the webhook's transport: a provider of its own, so that a test swaps it without rebuilding the outbox
    webhook_sender = providers.Singleton(WebhookSender)
    event_outbox = providers.Singleton(EventOutbox, session_factory, settings, webhook_sender, clock)
    health_service = providers.Singleton(HealthService, session_factory, plugin_cache,
                                         settings.provided.ready_timeout)

    location_service = providers.Singleton(LocationService, session_factory, plugin_registry)
    bucket_service = providers.Singleton(BucketService, session_factory, settings, clock)
    object_service = providers.Singleton(ObjectService, session_factory, content_store)
    upload_service = providers.Singleton(UploadService, session_factory, settings, content_store)
    multipart_service = providers.Singleton(MultipartService, session_factory, settings, content_store, plugin_cache,
                                            upload_service)
    file_service = providers.Singleton(FileService, session_factory, content_store)
    scrubber = providers.Singleton(Scrubber, session_factory, plugin_cache)
    garbage_collector = providers.Singleton(GarbageCollector, session_factory, content_store, plugin_cache,
                                            settings.provided.spool_dir, download_limits, restore_cache, event_outbox,
                                            multipart_service, settings.provided.upload_expiry_hours)
    restore_worker = providers.Singleton(RestoreWorker, session_factory, plugin_cache, restore_cache, event_outbox,
                                         settings, clock)


class ProfileInactive(RuntimeError):
    """A service of a profile that is not active was asked for."""


def _refuse(name: str, profiles: frozenset[str]) -> Callable[..., None]:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise ProfileInactive(f"{name} is not available under profile(s) {', '.join(sorted(profiles))}")

    return refuse


def build_container(settings: Settings, profiles: frozenset[str]) -> Container:
    """A container for these settings in which services of inactive profiles cannot be built."""
    container = Container()
    container.settings.override(providers.Object(settings))
    for name, provider in container.providers.items():
        provides = getattr(provider, "provides", None)
        if isinstance(provides, type) and not is_active(provides, profiles):
            provider.override(providers.Callable(_refuse(name, profiles)))
    return container
