"""A remote cluster's kubeconfig: read from a Secret's bytes, refused when unsafe."""

from typing import Any

import pytest
import yaml

from driftguard.core import kubeconfig

WHERE = "Secret shop/prod-kubeconfig key value"


def config(user: dict[str, Any], cluster: dict[str, Any] | None = None) -> bytes:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "prod",
        "contexts": [{"name": "prod", "context": {"cluster": "c", "user": "u"}}],
        "clusters": [{"name": "c", "cluster": cluster or {"server": "https://prod:6443"}}],
        "users": [{"name": "u", "user": user}],
    }
    return yaml.safe_dump(document).encode()


def test_a_token_kubeconfig_is_reduced_to_its_current_context() -> None:
    """Only the context in use, its cluster and its user are kept."""
    loaded = kubeconfig.load(config({"token": "t0ken"}), where=WHERE)
    assert loaded["current-context"] == "prod"
    assert loaded["clusters"] == [{"name": "c", "cluster": {"server": "https://prod:6443"}}]
    assert loaded["users"] == [{"name": "u", "user": {"token": "t0ken"}}]


@pytest.mark.parametrize(
    ("user", "cluster", "named"),
    [
        pytest.param({"exec": {"command": "aws"}}, None, "users[].user.exec", id="exec"),
        pytest.param({"auth-provider": {"name": "gcp"}}, None, "auth-provider", id="auth-provider"),
        pytest.param({"tokenFile": "/var/run/t"}, None, "tokenFile", id="token-file"),
        pytest.param({"client-certificate": "/c.pem"}, None, "client-certificate", id="cert-file"),
        pytest.param({"client-key": "/k.pem"}, None, "client-key", id="key-file"),
        pytest.param(
            {"token": "t"},
            {"server": "https://prod", "certificate-authority": "/etc/ca.pem"},
            "clusters[].cluster.certificate-authority",
            id="ca-file",
        ),
    ],
)
def test_programs_and_local_files_are_refused(
    user: dict[str, Any], cluster: dict[str, Any] | None, named: str
) -> None:
    """The message names the field and the flag that allows it, never a credential."""
    with pytest.raises(kubeconfig.RefusedError) as caught:
        kubeconfig.load(config(user, cluster), where=WHERE)
    message = str(caught.value)
    assert named in message
    assert WHERE in message
    assert "--insecure-kubeconfig-exec" in message


def test_the_operator_flag_allows_exec() -> None:
    """With --insecure-kubeconfig-exec, an exec kubeconfig is used as it is."""
    loaded = kubeconfig.load(config({"exec": {"command": "aws"}}), where=WHERE, allow_exec=True)
    assert loaded["users"][0]["user"] == {"exec": {"command": "aws"}}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        pytest.param(b"\xff\xfe", "not a kubeconfig", id="not-utf8"),
        pytest.param(b"[1, 2", "not a kubeconfig", id="bad-yaml"),
        pytest.param(b"- a list", "not a kubeconfig", id="not-a-map"),
        pytest.param(b"clusters: []", "no current-context", id="no-context"),
    ],
)
def test_what_is_not_a_kubeconfig_says_so(text: bytes, says: str) -> None:
    """Unreadable or incomplete text gets a message naming the Secret."""
    with pytest.raises(kubeconfig.RefusedError, match=says):
        kubeconfig.load(text, where=WHERE)


def test_a_context_without_a_server_is_refused() -> None:
    """A cluster entry needs its server."""
    with pytest.raises(kubeconfig.RefusedError, match="no cluster with a server"):
        kubeconfig.load(config({"token": "t"}, {"insecure-skip-tls-verify": True}), where=WHERE)


def test_a_secret_token_never_reaches_the_message() -> None:
    """Refusing a kubeconfig that holds a token does not repeat the token."""
    with pytest.raises(kubeconfig.RefusedError) as caught:
        kubeconfig.load(config({"token": "s3cr3t-token", "tokenFile": "/t"}), where=WHERE)
    assert "s3cr3t-token" not in str(caught.value)


def test_a_rotated_secret_has_another_fingerprint() -> None:
    """The same bytes give the same fingerprint; any change another."""
    one = config({"token": "a"})
    assert kubeconfig.fingerprint(one) == kubeconfig.fingerprint(one)
    assert kubeconfig.fingerprint(one) != kubeconfig.fingerprint(config({"token": "b"}))
