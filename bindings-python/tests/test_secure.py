"""SecureStrings and PSCredentials travel encrypted with the session key, both ways."""

from __future__ import annotations

from psremote import PSCredential, SecureString


def test_secure_string_from_the_server(pool):
    (value,) = pool.run_ps("ConvertTo-SecureString 'p@ss w0rd' -AsPlainText -Force").output
    assert isinstance(value, SecureString)
    assert value.get_value() == "p@ss w0rd"
    assert "p@ss" not in repr(value)


def test_secure_string_round_trip_as_input_and_parameter(pool):
    secret = SecureString("round-trip-secret")
    (back,) = pool.run_ps(pool.powershell().add_command("Write-Output"), input=[secret]).output
    assert back == secret and back.get_value() == "round-trip-secret"
    (back,) = pool.powershell().add_command("Write-Output").add_parameter("InputObject", secret).invoke().output
    assert back.get_value() == "round-trip-secret"


def test_credential_round_trip(pool):
    cred = PSCredential("DOMAIN\\user", "cred-secret")
    (back,) = pool.run_ps(pool.powershell().add_command("Write-Output"), input=[cred]).output
    assert isinstance(back, PSCredential)
    assert back.username == "DOMAIN\\user" and back.password.get_value() == "cred-secret"


def test_explicit_key_exchange_is_harmless(pool):
    pool.exchange_key()
    pool.exchange_key()
    (value,) = pool.run_ps("ConvertTo-SecureString x -AsPlainText -Force").output
    assert value.get_value() == "x"


def test_secrets_never_in_builder_repr(pool):
    ps = pool.powershell().add_command("Write-Output").add_parameter("InputObject", SecureString("hidden!")).add_argument(PSCredential("u", "hidden!"))
    assert "hidden!" not in repr(ps)
