"""The gateway's OPC UA security in the production profile, against real asyncua clients on loopback.

One gateway for the module (production profile, Basic256Sha256 / Aes128_Sha256_RsaOaep / Aes256_Sha256_RsaPss in
Sign and SignAndEncrypt), with four users: an operator whose password comes from an environment variable, an
engineer's from a file, a viewer's as a hash, and an operator who logs in by user certificate. The test client's
application certificate is in the trust list; a second one is not."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import Client, ua
from asyncua.client import client as asyncua_client

from lineguard.contracts import opcua as contract
from lineguard.services.gateway.protocols import opcua_access
from lineguard.services.gateway.protocols.opcua_security import hash_password
from lineguard.sim.plc import SimulatedPlc
from lineguard.testing.gateway import Gateway, find, publish_decision
from lineguard.testing.machine_vision import vision_system
from lineguard.testing.opcua import ClientCertificate, client_setup, make_certificate, secure_client
from lineguard.v1.decision_pb2 import Verdict
from lineguard.v1.trigger_pb2 import Trigger

pytestmark = pytest.mark.asyncio(loop_scope="module")

OPERATOR_ENV = "LINEGUARD_TEST_OPCUA_OPERATOR_PASSWORD"
PASSWORDS = {"op": "op-secret-1", "eng": "eng-secret-2", "view": "view-secret-3"}
OFFERED = [
    (p, m)
    for p in ("Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss")
    for m in ("Sign", "SignAndEncrypt")
]


@dataclass
class Secured:
    gateway: Gateway
    pki_dir: Path
    app: ClientCertificate  # trusted
    stranger: ClientCertificate  # not trusted
    user_cert: ClientCertificate  # the operator "camop"'s user certificate

    @property
    def endpoint(self) -> str:
        return self.gateway.endpoint


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory, started_gateway) -> AsyncIterator[Secured]:
    root = tmp_path_factory.mktemp("opcua-security")
    pki_dir, certs = root / "pki", root / "client-certs"
    app, stranger = make_certificate(certs, "plc"), make_certificate(certs, "stranger")
    user_cert = make_certificate(certs, "camop-user")
    app.trust(pki_dir)
    (root / "eng.password").write_text(PASSWORDS["eng"] + "\n")
    security = {
        "profile": "production",
        "pki_dir": str(pki_dir),
        "users": [
            {"name": "op", "role": "operator", "password_env": OPERATOR_ENV},
            {"name": "eng", "role": "engineer", "password_file": str(root / "eng.password")},
            {"name": "view", "role": "viewer", "password_hash": hash_password(PASSWORDS["view"])},
            {"name": "camop", "role": "operator", "certificate": str(user_cert.certificate)},
        ],
    }
    os.environ[OPERATOR_ENV] = PASSWORDS["op"]
    try:
        async with started_gateway(root / "nats", quick_deadline_ms=300, plc_security=security) as gateway:
            yield Secured(gateway, pki_dir, app, stranger, user_cert)
    finally:
        del os.environ[OPERATOR_ENV]


def login(secured: Secured, user: str, password: str | None = None, **options: str):
    return client_setup(
        secured.app, user=user, password=PASSWORDS.get(user) if password is None else password, **options
    )


async def station_nodes(client: Client, station: str = "s1") -> tuple[ua.Node, ua.Node, ua.Node]:
    idx = await client.get_namespace_index(contract.NAMESPACE_URI)
    return (
        client.get_node(ua.NodeId(contract.station_path(station), idx)),
        client.get_node(ua.NodeId(contract.node_path(station, contract.TRIGGER_METHOD), idx)),
        client.get_node(ua.NodeId(contract.node_path(station, contract.RESULT_VERDICT), idx)),
    )


def trigger_args(sequence: int) -> tuple[ua.Variant, ua.Variant]:
    return ua.Variant(sequence, ua.VariantType.UInt32), ua.Variant("", ua.VariantType.String)


async def settle(secured: Secured, sequence: int) -> None:
    """Answer the trigger a test made, so nothing stays in flight at s1."""
    [trigger] = await find(secured.gateway.bus, "trigger", Trigger, lambda t: t.part.sequence == sequence)
    await publish_decision(secured.gateway.bus, trigger.part, Verdict.VERDICT_PASS)


async def test_an_operator_over_basic256sha256_sign_and_encrypt_triggers_and_gets_the_result(secured: Secured) -> None:
    setup = login(secured, "op", policy="Basic256Sha256", mode="SignAndEncrypt")
    async with SimulatedPlc(secured.endpoint, "s1", first_sequence=1001, setup=setup) as plc:
        run = asyncio.create_task(plc.run(1, rate_hz=10, result_timeout_s=10))
        [trigger] = await find(secured.gateway.bus, "trigger", Trigger, lambda t: t.part.sequence == 1001)
        await publish_decision(secured.gateway.bus, trigger.part, Verdict.VERDICT_FAIL, "DEFECT_SHORT")
        report = await run
    assert report.ok, report
    [result] = report.results
    assert (result.sequence, result.inspection_id, result.verdict) == (1001, trigger.part.inspection_id, "FAIL")
    assert result.reasons == ["DEFECT_SHORT"]


@pytest.mark.parametrize(
    ("policy", "mode"),
    [
        (p, m)
        for p in ("Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss")
        for m in ("Sign", "SignAndEncrypt")
    ],
)
async def test_every_offered_policy_and_mode_serves_a_login(secured: Secured, policy: str, mode: str) -> None:
    client = await secure_client(secured.endpoint, login(secured, "view", policy=policy, mode=mode))
    async with client:
        _, _, verdict = await station_nodes(client)
        assert await verdict.read_value() in {contract.NO_RESULT_VERDICT, *contract.RESULT_VERDICTS.values()}


async def test_the_server_offers_no_none_policy_and_no_anonymous_login(secured: Secured) -> None:
    endpoints = await Client(secured.endpoint).connect_and_get_server_endpoints()  # discovery needs no session
    offered = {(e.SecurityPolicyUri.rsplit("#", 1)[1], e.SecurityMode.name) for e in endpoints}
    assert offered == {
        (p, m)
        for p in ("Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss")
        for m in ("Sign", "SignAndEncrypt")
    }
    tokens = {t.TokenType for e in endpoints for t in e.UserIdentityTokens}
    assert tokens == {ua.UserTokenType.UserName, ua.UserTokenType.Certificate}


async def test_anonymous_is_refused(secured: Secured) -> None:
    client = await secure_client(secured.endpoint, client_setup(secured.app))
    with pytest.raises(ua.UaStatusCodeError) as refused:
        await client.connect()
    assert refused.value.code == ua.StatusCodes.BadIdentityTokenRejected
    await client.disconnect()


@pytest.fixture
def rogue_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that opens a channel without security although the server offers no such endpoint (asyncua's own
    client checks the endpoint list first; an attacker's does not)."""

    def any_endpoint(endpoints: list[ua.EndpointDescription], mode: object, policy_uri: str) -> ua.EndpointDescription:
        endpoint = endpoints[0]
        for token in endpoint.UserIdentityTokens:
            if token.TokenType == ua.UserTokenType.UserName:  # the password in plain text
                token.SecurityPolicyUri = "http://opcfoundation.org/UA/SecurityPolicy#None"
        return endpoint

    monkeypatch.setattr(asyncua_client.Client, "find_endpoint", staticmethod(any_endpoint))


@pytest.mark.usefixtures("rogue_client")
async def test_a_channel_without_security_gets_no_session(secured: Secured) -> None:
    client = Client(secured.endpoint, timeout=10)
    client.set_user("op")
    client.set_password(PASSWORDS["op"])
    with pytest.raises(ua.UaStatusCodeError) as refused:
        await client.connect()
    assert refused.value.code == ua.StatusCodes.BadUserAccessDenied
    await client.disconnect()


@pytest.mark.usefixtures("rogue_client")
async def test_a_user_certificate_on_a_channel_without_security_may_do_nothing(secured: Secured) -> None:
    """The channel is open to anyone on the wire: the login is refused, or the session may not read or browse."""
    client = Client(secured.endpoint, timeout=10)
    await client.connect_socket()
    try:
        await client.send_hello()
        await client.open_secure_channel()
        await client.create_session()  # naming no client certificate, so none is checked
        await client.load_client_certificate(str(secured.user_cert.certificate))
        await client.load_private_key(str(secured.user_cert.private_key))
        try:
            await client.activate_session(certificate=client.user_certificate)
        except ua.UaStatusCodeError as refused:  # asyncua's own check of the token's signature (today)
            assert refused.code == ua.StatusCodes.BadIdentityTokenInvalid
            return
        # Else the session exists, and the channel's discovery-only rules refuse everything in it.
        with pytest.raises(ua.UaStatusCodeError) as read:
            await client.nodes.server_state.read_value()
        assert read.value.code == ua.StatusCodes.BadUserAccessDenied
        with pytest.raises(ua.UaStatusCodeError) as browse:
            await client.nodes.objects.get_children()
        assert browse.value.code == ua.StatusCodes.BadUserAccessDenied
    finally:
        client.disconnect_socket()


@pytest.mark.parametrize(("user", "password"), [("op", "wrong"), ("op", ""), ("nobody", "op-secret-1")])
async def test_a_wrong_password_or_an_unknown_user_is_refused(secured: Secured, user: str, password: str) -> None:
    client = await secure_client(secured.endpoint, login(secured, user, password))
    with pytest.raises(ua.UaStatusCodeError) as refused:
        await client.connect()
    assert refused.value.code == ua.StatusCodes.BadUserAccessDenied
    await client.disconnect()


async def test_admin_with_any_password_gets_nothing(secured: Secured) -> None:
    """asyncua's default user manager made `admin` an administrator with any password."""
    for name in ("admin", "Admin"):
        client = await secure_client(secured.endpoint, login(secured, name, "anything"))
        with pytest.raises(ua.UaStatusCodeError) as refused:
            await client.connect()
        assert refused.value.code == ua.StatusCodes.BadUserAccessDenied
        await client.disconnect()


@pytest.mark.parametrize("user", ["op", "eng"])
async def test_nobody_writes_results_or_changes_the_address_space(secured: Secured, user: str) -> None:
    """What a logged-in `admin` did before: wrote ResultVerdict, deleted the Trigger node."""
    async with await secure_client(secured.endpoint, login(secured, user)) as client:
        station, trigger, verdict = await station_nodes(client)
        before = await verdict.read_value()
        with pytest.raises(ua.UaStatusCodeError) as write:
            await verdict.write_value(ua.Variant(contract.RESULT_VERDICTS["PASS"], ua.VariantType.Int32))
        assert write.value.code == ua.StatusCodes.BadUserAccessDenied
        with pytest.raises(ua.UaStatusCodeError) as delete:
            await client.delete_nodes([trigger])
        assert delete.value.code == ua.StatusCodes.BadUserAccessDenied
        with pytest.raises(ua.UaStatusCodeError) as add:
            await station.add_variable(ua.NodeId("Stations/s1/Injected", verdict.nodeid.NamespaceIndex), "Injected", 1)
        assert add.value.code == ua.StatusCodes.BadUserAccessDenied
        assert await verdict.read_value() == before
        assert (await trigger.read_browse_name()).Name == contract.TRIGGER_METHOD  # still there
        access = await verdict.read_attribute(ua.AttributeIds.AccessLevel)
        assert access.Value.Value & ua.AccessLevel.CurrentWrite.mask == 0  # read-only on the node itself, too


async def test_a_viewer_reads_but_may_not_trigger(secured: Secured) -> None:
    async with await secure_client(secured.endpoint, login(secured, "view")) as client:
        station, trigger, verdict = await station_nodes(client)
        await verdict.read_value()
        with pytest.raises(ua.UaStatusCodeError) as refused:
            await station.call_method(trigger, *trigger_args(1101))
        assert refused.value.code == ua.StatusCodes.BadUserAccessDenied
    assert await find(secured.gateway.bus, "trigger", Trigger, lambda t: t.part.sequence == 1101, timeout=0.5) == []


@pytest.mark.parametrize(("user", "allowed"), [("view", False), ("op", True), ("eng", True)])
async def test_prepare_recipe_needs_the_operator_role(secured: Secured, user: str, allowed: bool) -> None:
    # PrepareRecipe is how a PLC changes product (between parts): the PLC's own role, operator, may; a viewer may
    # not. Changing what a recipe is (AddRecipe, ...) stays the engineer's.
    async with await secure_client(secured.endpoint, login(secured, user)) as client:
        vc = await vision_system(client, "s1")
        prepare = vc.call(
            ("RecipeManagement", "PrepareRecipe"),
            ua.RecipeIdExternalDataType(Id="pcb-a"),
            ua.RecipeIdInternalDataType(),
        )
        if allowed:
            internal, completed, error = await prepare
            assert (internal.Id, completed, error) == ("pcb-a", True, 0)
        else:
            with pytest.raises(ua.UaStatusCodeError) as refused:
                await prepare
            assert refused.value.code == ua.StatusCodes.BadUserAccessDenied


async def test_a_user_certificate_logs_in_as_its_operator(secured: Secured) -> None:
    setup = client_setup(secured.app, user_certificate=secured.user_cert)
    async with await secure_client(secured.endpoint, setup) as client:
        station, trigger, _ = await station_nodes(client)
        inspection_id = await station.call_method(trigger, *trigger_args(1201))
    assert inspection_id
    await settle(secured, 1201)


async def test_an_unknown_user_certificate_is_refused(secured: Secured) -> None:
    setup = client_setup(secured.app, user_certificate=secured.stranger)
    client = await secure_client(secured.endpoint, setup)
    with pytest.raises(ua.UaStatusCodeError) as refused:
        await client.connect()
    assert refused.value.code == ua.StatusCodes.BadUserAccessDenied
    await client.disconnect()


async def test_an_untrusted_client_certificate_is_refused_and_kept_for_review(secured: Secured) -> None:
    setup = client_setup(secured.stranger, user="op", password=PASSWORDS["op"])
    client = await secure_client(secured.endpoint, setup)
    with pytest.raises(ua.UaStatusCodeError) as refused:
        await client.connect()
    assert refused.value.code == ua.StatusCodes.BadCertificateUntrusted
    await client.disconnect()
    rejected = list((secured.pki_dir / "rejected").glob("*.der"))
    assert [p.read_bytes() for p in rejected] == [secured.stranger.certificate.read_bytes()]
    # The engineer trusts it by moving it; the next session is served without a restart.
    rejected[0].rename(secured.pki_dir / "trusted" / rejected[0].name)
    try:
        async with await secure_client(secured.endpoint, setup) as client:
            await (await station_nodes(client))[2].read_value()
    finally:
        (secured.pki_dir / "trusted" / rejected[0].name).unlink()


async def test_the_server_says_it_is_lineguard(secured: Secured) -> None:
    async with await secure_client(secured.endpoint, login(secured, "view")) as client:
        build = await client.get_node(ua.ObjectIds.Server_ServerStatus_BuildInfo).read_value()
        [uri] = await client.get_node(ua.ObjectIds.Server_ServerArray).read_value()
        endpoints = await client.get_endpoints()
    assert build.ManufacturerName == opcua_access.MANUFACTURER_NAME == "lineguard"
    assert (build.ProductName, build.ProductUri) == (opcua_access.PRODUCT_NAME, opcua_access.PRODUCT_URI)
    assert build.SoftwareVersion and build.SoftwareVersion[0].isdigit()
    assert uri.endswith(":lineguard:gateway") and "freeopcua" not in uri
    assert {e.Server.ApplicationUri for e in endpoints} == {uri}
    assert {e.Server.ProductUri for e in endpoints} == {opcua_access.PRODUCT_URI}
    # The server certificate it made on first start names the same ApplicationUri.
    assert (secured.pki_dir / "own" / "cert.der").is_file()


async def test_a_generic_40100_client_over_sign_and_encrypt_with_a_login_gets_one_result_per_job(
    secured: Secured,
) -> None:
    # The bar for the Machine Vision profile: a client knowing only the standard, in the production profile.
    client = await secure_client(secured.endpoint, login(secured, "op", policy="Basic256Sha256", mode="SignAndEncrypt"))
    async with client:
        vc = await vision_system(client, "s1")
        await vc.wait_for(lambda: bool(vc.states))
        jobs = [await vc.start_single_job(f"sec-meas-{i}", f"sec-part-{i}") for i in range(2)]
        for job_id in jobs:
            [trigger] = await find(
                secured.gateway.bus, "trigger", Trigger, lambda t, j=job_id: t.part.inspection_id == j
            )
            await publish_decision(secured.gateway.bus, trigger.part, Verdict.VERDICT_FAIL, "DEFECT_SHORT")
        await vc.wait_for(lambda: len(vc.results()) >= 2)
        await asyncio.sleep(0.3)  # a duplicate, had there been one, would be here by now
    assert sorted(r["ResultId"].Id for r in vc.results()) == sorted(jobs)
