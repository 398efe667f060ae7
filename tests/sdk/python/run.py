"""Drives every Vault method of the official WorkOS Python SDK against a running byok-broker.

The SDK is the PyPI package `workos`, pinned with hashes in requirements.txt; scripts/sdk-compat.sh
installs it into tests/sdk/python/.venv and runs this file after the Node run (tests/sdk/run.mjs),
whose checks these mirror. Both clients of the SDK go through the same checks: `WorkOSClient` and
`AsyncWorkOSClient`, each reaching the broker through `base_url` and the SDK's own default HTTP
client (httpx2), unmodified.

Also the Admin Portal's link generation (`admin_portal.generate_link`, intent bring_your_own_key)
with the admin key.

Usage: BROKER_PORT=8787 WORKOS_API_KEY=<app key> WORKOS_ADMIN_KEY=<admin key> python run.py
BROKER_HTTPS=1: over TLS, the broker's CA given through SSL_CERT_FILE (which the SDK's default
client reads, as NODE_EXTRA_CA_CERTS is read by Node); checks too that a client without the CA is
refused and that an `http_client` built on an SSL context with the CA works.
Prints one line per check and "N passed, N failed"; exits non-zero on any failure.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import os
import ssl
import sys
import time
import traceback
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable

import httpx2
from cryptography.exceptions import InvalidTag
from workos import (
    AsyncWorkOSClient,
    AuthenticationError,
    AuthorizationError,
    ConflictError,
    NotFoundError,
    UnprocessableEntityError,
    WorkOSClient,
)
from workos._errors import WorkOSConnectionError  # raised by the SDK, not re-exported by `workos`

PORT = int(os.environ.get("BROKER_PORT", "8787"))
API_KEY = os.environ["WORKOS_API_KEY"]
# The admin key: Admin Portal links (`client.admin_portal.generate_link`).
ADMIN_KEY = os.environ["WORKOS_ADMIN_KEY"]
HTTPS = os.environ.get("BROKER_HTTPS") == "1"
SCHEME = "https" if HTTPS else "http"
BASE_URL = f"{SCHEME}://127.0.0.1:{PORT}"
# Any string: the SDK constructor wants an API key or a client id, Vault only the key.
CLIENT_ID = "client_sdk_compat"

passed = 0
failed = 0


async def check(name: str, fn: Callable[[], Awaitable[None]]) -> None:
    global passed, failed
    try:
        await fn()
        passed += 1
        print(f"ok   {name}", flush=True)
    except Exception:  # every failure, assertion or SDK error, is one failed check
        failed += 1
        print(f"FAIL {name}: {traceback.format_exc()}", flush=True)


async def settle(value: Any) -> Any:
    """The result of a call on either client: the async client's methods return awaitables."""
    return await value if inspect.isawaitable(value) else value


async def every_page(page: Any) -> list[Any]:
    """All items from this page on, through the SDK's own auto-pagination."""
    items = page.auto_paging_iter()
    if hasattr(items, "__aiter__"):
        return [item async for item in items]
    return list(items)


async def raises(call: Callable[[], Any], error: type[BaseException], status: int | None = None) -> None:
    try:
        await settle(call())
    except error as exc:
        if status is not None:
            assert getattr(exc, "status_code", None) == status, f"status {exc.status_code}, not {status}"
        return
    raise AssertionError(f"expected {error.__name__}")


def make_client(label: str, **options: Any) -> Any:
    client_class = AsyncWorkOSClient if label.startswith("async") else WorkOSClient
    options.setdefault("api_key", API_KEY)
    return client_class(client_id=CLIENT_ID, base_url=BASE_URL, max_retries=0, **options)


async def exercise(label: str) -> None:
    workos = make_client(label)
    vault = workos.vault
    suffix = f"{label}-{time.time_ns()}"
    context = {"organization_id": f"org_{suffix}"}
    state: dict[str, Any] = {}

    async def create_kv() -> None:
        created = await settle(vault.create_kv(name=f"secret/{suffix}", value="s3cr3t", key_context=context))
        assert len(created.id) == 36
        assert created.context == context
        assert created.version_id
        state["created"] = created

    await check(f"{label} create_kv", create_kv)
    created = state.get("created")
    if created is None:
        return  # nothing to read, update or delete: the failed check says why

    async def get_kv() -> None:
        obj = await settle(vault.get_kv(created.id))
        assert obj.value == "s3cr3t"
        assert obj.name == f"secret/{suffix}"
        assert obj.metadata.version_id == created.version_id

    await check(f"{label} get_kv", get_kv)

    async def get_name() -> None:
        obj = await settle(vault.get_name(f"secret/{suffix}"))
        assert obj.id == created.id
        # The SDK percent-encodes each path segment (a space as %20, UTF-8 bytes as %XX).
        other = await settle(vault.create_kv(name=f"a b/ü {suffix}", value="v", key_context=context))
        assert (await settle(vault.get_name(f"a b/ü {suffix}"))).id == other.id
        await settle(vault.delete_kv(other.id))

    await check(f"{label} get_name (names with a slash, a space, non-ASCII)", get_name)

    async def create_kv_taken_name() -> None:
        await raises(
            lambda: vault.create_kv(name=f"secret/{suffix}", value="x", key_context=context), ConflictError, 409
        )

    await check(f"{label} create_kv with a name taken is a ConflictError", create_kv_taken_name)

    async def idempotent_create() -> None:
        # The SDK sends an Idempotency-Key (a bare UUID) on every POST and keeps it across its
        # retries; here the caller's own key, sent twice as a retry would.
        options = {"idempotency_key": f"idem-{suffix}"}
        first = await settle(
            vault.create_kv(name=f"idem/{suffix}", value="v", key_context=context, request_options=options)
        )
        again = await settle(
            vault.create_kv(name=f"idem/{suffix}", value="v", key_context=context, request_options=options)
        )
        assert (again.id, again.version_id) == (first.id, first.version_id), "the retry replays the first answer"
        await raises(
            lambda: vault.create_kv(name=f"idem/{suffix}", value="other", key_context=context, request_options=options),
            UnprocessableEntityError,
            422,
        )
        await settle(vault.delete_kv(first.id))

    await check(f"{label} create_kv retried with one idempotency_key creates one object", idempotent_create)

    async def describe() -> None:
        described = await settle(vault.list_kv_metadata(created.id))
        assert not hasattr(described, "value"), "describe carries no value"
        assert described.metadata.id == created.id
        assert described.metadata.updated_by.id

    await check(f"{label} list_kv_metadata (describe)", describe)

    async def update() -> None:
        updated = await settle(vault.update_kv(created.id, value="n3w", version_check=created.version_id))
        assert updated.metadata.version_id != created.version_id
        assert not hasattr(updated, "value")
        assert (await settle(vault.get_kv(created.id))).value == "n3w"
        state["updated"] = updated

    await check(f"{label} update_kv with version_check", update)

    async def update_stale() -> None:
        await raises(
            lambda: vault.update_kv(created.id, value="x", version_check=created.version_id), ConflictError, 409
        )

    await check(f"{label} update_kv with a stale version_check is a ConflictError", update_stale)

    async def versions() -> None:
        listed = await settle(vault.list_kv_versions(created.id))
        assert len(listed.data) == 2
        current = [v for v in listed.data if v.current_version]
        assert len(current) == 1
        assert current[0].id == state["updated"].metadata.version_id
        assert listed.list_metadata.after is None

    await check(f"{label} list_kv_versions", versions)

    async def list_kv() -> None:
        page = await settle(vault.list_kv(limit=100))
        assert any(o.id == created.id for o in page.data)

    await check(f"{label} list_kv", list_kv)

    if label.startswith("sync"):

        async def pages_of_100() -> None:
            for i in range(101):
                vault.create_kv(name=f"page-{i}/{suffix}", value="v", key_context=context)
            names = [o.name for o in await every_page(vault.list_kv(limit=100))]
            assert len(set(names)) == len(names), "no object twice"
            assert f"secret/{suffix}" in names
            assert len([n for n in names if n.startswith("page-") and n.endswith(suffix)]) == 101

        await check(f"{label} list_kv auto_paging_iter across pages of 100", pages_of_100)
    else:

        async def small_pages() -> None:
            for i in range(12):
                await vault.create_kv(name=f"page-{i}/{suffix}", value="v", key_context=context)
            # `search` matches a substring of the name; pages of 5 over 13 matches: three pages.
            names = [o.name for o in await every_page(await vault.list_kv(limit=5, search=suffix))]
            names = [n for n in names if n.startswith("page-")]
            assert len(set(names)) == len(names) == 12, names

        await check(f"{label} list_kv auto_paging_iter across pages of 5, with search", small_pages)

    async def order_and_search() -> None:
        ascending = [o.name for o in await every_page(await settle(vault.list_kv(search=suffix, order="asc")))]
        descending = [o.name for o in await every_page(await settle(vault.list_kv(search=suffix, order="desc")))]
        assert ascending and all(suffix in n for n in ascending), ascending
        assert ascending == list(reversed(descending))

    await check(f"{label} list_kv order and search", order_and_search)

    async def updated_after() -> None:
        now = datetime.now(timezone.utc)
        recent = await settle(vault.list_kv(updated_after=now - timedelta(hours=1)))
        assert len(recent.data) > 0, "objects updated in the last hour are listed"
        none = await settle(vault.list_kv(updated_after=now + timedelta(hours=1)))
        assert len(none.data) == 0
        as_text = await settle(vault.list_kv(updated_after=(now + timedelta(hours=1)).isoformat()))
        assert len(as_text.data) == 0

    await check(f"{label} list_kv updated_after (datetime and ISO 8601 text)", updated_after)

    async def encrypt_decrypt() -> None:
        # The async client's encrypt/decrypt are coroutines too; settle() takes either.
        blob = await settle(vault.encrypt(data="hello world", key_context=context, associated_data="aad-1"))
        assert await settle(vault.decrypt(encrypted_data=blob, associated_data="aad-1")) == "hello world"
        await raises(lambda: vault.decrypt(encrypted_data=blob, associated_data="wrong-aad"), InvalidTag)
        plain = await settle(vault.encrypt(data="ünïcode", key_context=context))
        assert await settle(vault.decrypt(encrypted_data=plain)) == "ünïcode"

    await check(f"{label} encrypt/decrypt with and without associated data", encrypt_decrypt)

    async def data_keys() -> None:
        key = await settle(vault.create_data_key(context=context))
        assert len(base64.b64decode(key.data_key)) == 32
        assert key.context == context
        again = await settle(vault.create_decrypt(keys=key.encrypted_keys))
        assert again.data_key == key.data_key
        assert again.id == key.id

    await check(f"{label} create_data_key/create_decrypt", data_keys)

    async def rekey() -> None:
        key = await settle(vault.create_data_key(context=context))
        moved = {**context, "data_type": "moved"}
        rekeyed = await settle(vault.create_rekey(context=moved, encrypted_keys=key.encrypted_keys))
        assert rekeyed.data_key == key.data_key
        assert rekeyed.context == moved
        again = await settle(vault.create_decrypt(keys=rekeyed.encrypted_keys))
        assert again.data_key == key.data_key

    await check(f"{label} create_rekey", rekey)

    async def bad_context() -> None:
        await raises(lambda: vault.create_data_key(context={}), UnprocessableEntityError, 422)

    await check(f"{label} an empty key context is an UnprocessableEntityError", bad_context)

    async def delete_stale() -> None:
        await raises(lambda: vault.delete_kv(created.id, version_check=created.version_id), ConflictError, 409)
        assert (await settle(vault.get_kv(created.id))).value == "n3w", "a refused delete keeps the object"

    await check(f"{label} delete_kv with a stale version_check is a ConflictError", delete_stale)

    async def delete() -> None:
        await settle(vault.delete_kv(created.id, version_check=state["updated"].metadata.version_id))
        await raises(lambda: vault.get_kv(created.id), NotFoundError, 404)

    await check(f"{label} delete_kv", delete)

    async def wrong_key() -> None:
        other = make_client(label, api_key="sk_wrong_key_123456789")
        await raises(lambda: other.vault.get_kv(created.id), AuthenticationError, 401)

    await check(f"{label} a wrong API key is an AuthenticationError", wrong_key)

    if HTTPS:

        async def untrusted() -> None:
            # The SDK's default client verifies the certificate: without the test CA it is refused.
            ca_file = os.environ.pop("SSL_CERT_FILE")
            try:
                stranger = make_client(label)
            finally:
                os.environ["SSL_CERT_FILE"] = ca_file
            await raises(lambda: stranger.vault.create_data_key(context=context), WorkOSConnectionError)

        await check(f"{label} a client without the test CA is refused", untrusted)

        async def own_http_client() -> None:
            verify = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
            http = httpx2.AsyncClient(verify=verify) if label.startswith("async") else httpx2.Client(verify=verify)
            own = make_client(label, http_client=http)
            key = await settle(own.vault.create_data_key(context=context))
            assert len(base64.b64decode(key.data_key)) == 32
            await settle(http.aclose() if label.startswith("async") else http.close())

        await check(f"{label} http_client= with an SSL context that trusts the test CA", own_http_client)

    await settle(workos.close())


async def portal(label: str) -> None:
    """Admin Portal links: the link for intent bring_your_own_key; other intents and app keys refused."""
    workos = make_client(label, api_key=ADMIN_KEY)
    organization = f"org_portal_{label}_{time.time_ns()}"

    async def generate() -> None:
        result = await settle(workos.admin_portal.generate_link(
            organization=organization, intent="bring_your_own_key",
            return_url="https://app.example/settings", success_url="https://app.example/done"))
        prefix = f"{BASE_URL}/portal/launch?token=ptl_"
        assert result.link.startswith(prefix) and len(result.link) == len(prefix) + 64, result.link

    await check(f"{label} admin_portal.generate_link (bring_your_own_key)", generate)

    async def other_intent() -> None:
        await raises(lambda: workos.admin_portal.generate_link(organization=organization, intent="sso"),
                     UnprocessableEntityError, 422)
        await raises(lambda: workos.admin_portal.generate_link(organization=organization),
                     UnprocessableEntityError, 422)

    await check(f"{label} admin_portal.generate_link with another intent, or none, is a 422", other_intent)

    async def app_key() -> None:
        app = make_client(label)
        await raises(lambda: app.admin_portal.generate_link(organization=organization, intent="bring_your_own_key"),
                     AuthorizationError, 403)
        await settle(app.close())

    await check(f"{label} admin_portal.generate_link with an app key is a 403", app_key)
    await settle(workos.close())


async def main() -> int:
    if HTTPS and not os.environ.get("SSL_CERT_FILE"):
        print("error: BROKER_HTTPS=1 needs SSL_CERT_FILE (the broker's CA)", file=sys.stderr)
        return 2
    await exercise(f"sync-{SCHEME}")
    await exercise(f"async-{SCHEME}")
    await portal(f"sync-{SCHEME}")
    await portal(f"async-{SCHEME}")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
