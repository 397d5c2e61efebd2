"""CLIXML <-> Python values, both ways: sent as parameters and as pipeline input, echoed back
by the endpoint's Write-Output, compared."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import pickle
import uuid

import pytest

from psremote import PSCredential, PSCustomObject, PSEnum, PSObject, SecureString, to_pscustomobject

UTC = datetime.timezone.utc

ROUND_TRIP = [
    "text",
    "",
    "ünïcödé ☃ \x00 control",
    0,
    -1,
    2**31 - 1,
    2**31,  # I64
    -(2**63),
    2**64 - 1,  # U64
    1.5,
    -0.0,
    float("inf"),
    True,
    False,
    None,
    b"\x00\x01bytes\xff",
    decimal.Decimal("12345.6789"),
    uuid.UUID("12345678-1234-5678-9abc-def012345678"),
    datetime.datetime(2024, 2, 29, 12, 34, 56, 789000, tzinfo=UTC),
    datetime.datetime(2024, 1, 1, 8, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=-7))),
    datetime.timedelta(days=1, hours=2, seconds=3, microseconds=400),
    # Not a multiple of 10 s: psrpcore 0.3.1 (the endpoint) writes 30 s as "3S" (rstrip(".0")).
    datetime.timedelta(seconds=-95),
    [1, "two", None],
    [],
    {"a": 1, "b": [1, 2], "c": {"nested": True}},
]


@pytest.mark.parametrize("value", ROUND_TRIP, ids=[repr(v)[:40] for v in ROUND_TRIP])
def test_round_trip_as_input(client, value):
    # -NoEnumerate is implied for input: each input object comes back as it went.
    result = client.run_ps(client.powershell().add_command("Write-Output"), input=[value])
    assert result.state == "Completed"
    assert result.output == [value]
    back = result.output[0]
    assert type(back) is type(value)
    if isinstance(value, datetime.datetime):
        assert back.utcoffset() == value.utcoffset()


@pytest.mark.parametrize("value", ROUND_TRIP[:22], ids=[repr(v)[:40] for v in ROUND_TRIP[:22]])
def test_round_trip_as_parameter(client, value):
    ps = client.powershell().add_command("Write-Output").add_parameter("InputObject", value).add_parameter("NoEnumerate")
    result = ps.invoke()
    assert result.output == [value]


def test_dict_keeps_order(client):
    value = {k: i for i, k in enumerate("zyxwvu")}
    back = client.run_ps(client.powershell().add_command("Write-Output"), input=[value]).output[0]
    assert list(back) == list(value)


def test_custom_objects_from_dataclasses_and_mappings(client):
    @dataclasses.dataclass
    class Point:
        x: int
        y: int
        label: str = "p"

    sent = [Point(1, 2), PSCustomObject({"Name": "n", "Size": 3}), PSCustomObject(Name="kw", Nested=Point(3, 4))]
    out = client.run_ps(client.powershell().add_command("Write-Output"), input=sent).output
    assert [type(o) for o in out] == [PSObject] * 3
    assert out[0].x == 1 and out[0]["y"] == 2 and out[0].label == "p"
    assert "System.Management.Automation.PSCustomObject" in out[0].type_names
    assert list(out[1].properties) == ["Name", "Size"]
    assert out[2].Nested.x == 3
    assert out[1] == to_pscustomobject({"Name": "n", "Size": 3}) or out[1].properties == {"Name": "n", "Size": 3}


def test_psobject_from_server_has_types_properties_and_text(client):
    out = client.run_ps("Get-Item /").output
    assert len(out) == 1
    item = out[0]
    assert isinstance(item, PSObject)
    assert item.type_names[0].endswith("System.IO.DirectoryInfo")
    assert item.Name == "/" or item.FullName == "/"
    assert item["FullName"] == item.FullName
    assert item.fullname == item.FullName  # case-insensitive, like PowerShell
    assert "PSIsContainer" in item.extended_properties
    assert "FullName" in item.adapted_properties
    assert item.PSIsContainer is True
    assert isinstance(item.LastWriteTime, datetime.datetime) and item.LastWriteTime.tzinfo is not None
    assert item.to_string is not None and str(item) == item.to_string
    text = repr(item)
    assert text.startswith("<PSObject DirectoryInfo") and "FullName=" in text
    with pytest.raises(AttributeError):
        item.NoSuchProperty
    with pytest.raises(KeyError):
        item["NoSuchProperty"]
    assert item.get("NoSuchProperty", 5) == 5
    # Sent back, the same object returns.
    again = client.run_ps(client.powershell().add_command("Write-Output"), input=[item]).output[0]
    assert again == item


def test_enum_from_server_and_back(client):
    (info,) = client.run_ps("Write-Host x -ForegroundColor Red").information
    server_color = info.message_data.ForegroundColor
    assert isinstance(server_color, PSEnum)
    assert server_color == 12 and server_color.name == "Red" and "System.ConsoleColor" in server_color.type_names[0]
    color = PSEnum(9, "Blue", ["System.ConsoleColor", "System.Enum", "System.ValueType", "System.Object"])
    back = client.run_ps(client.powershell().add_command("Write-Output"), input=[color]).output[0]
    assert isinstance(back, PSEnum)
    assert back == 9 and back.name == "Blue" and back.type_names[0] == "System.ConsoleColor"
    assert repr(back) == "<ConsoleColor.Blue: 9>"


def test_unsupported_type_is_a_type_error(client):
    with pytest.raises(TypeError, match="cannot send a object"):
        client.run_ps(client.powershell().add_command("Write-Output").add_argument(object()))


def test_many_objects_arrive_in_order(client):
    out = client.run_ps("New-TestObject -Count 2000 -Properties 5 -Size 8").output
    assert len(out) == 2000
    assert out[0].Property1 == out[-1].Property1
    assert len(out[0].properties) == 5


# --- the value classes themselves ---------------------------------------------------------


def test_secure_string_never_shows_its_value():
    secret = SecureString("hunter2")
    for text in (repr(secret), str(secret), f"{secret}", f"{secret!r}", "%s" % secret, str([secret]), str({"k": secret})):
        assert "hunter2" not in text
    assert secret.get_value() == "hunter2"
    assert secret == SecureString("hunter2") and secret != SecureString("other")
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    with pytest.raises(TypeError):
        hash(secret)


def test_credential_repr_and_network_credential():
    cred = PSCredential("DOMAIN\\user", "s3cret")
    assert isinstance(cred.password, SecureString)
    assert "s3cret" not in repr(cred) and "s3cret" not in str(cred)
    net = cred.get_network_credential()
    assert (net.user_name, net.domain, net.password) == ("user", "DOMAIN", "s3cret")
    assert "s3cret" not in repr(net)
    assert PSCredential("u@realm", SecureString("x")).get_network_credential()[:2] == ("u", "realm")
    assert PSCredential("u", None).password.get_value() == ""
    with pytest.raises(TypeError):
        PSCredential("u", 5)  # type: ignore[arg-type]


def test_psenum_is_an_int():
    e = PSEnum(3, "Cyan", ["System.ConsoleColor"])
    assert e == 3 and e + 1 == 4 and hash(e) == hash(3)
    assert e.name == "Cyan" and e.value == 3 and str(e) == "Cyan" and f"{e:d}" == "3"
    assert pickle.loads(pickle.dumps(e)).name == "Cyan"


def test_psobject_access_and_repr():
    obj = PSObject(["Foo.Bar", "System.Object"], "text", {"Name": "adapted", "Size": 1}, {"Name": "extended", "Extra": [1]})
    assert obj.Name == "extended" and obj["Name"] == "extended"  # extended wins
    assert obj.Size == 1 and obj.size == 1
    assert list(obj) == ["Name", "Size", "Extra"] and len(obj) == 3 and "Extra" in obj
    assert str(obj) == "text"
    assert repr(obj).startswith("<PSObject Bar Name='extended'")
    assert "<table>" in obj._repr_html_()
    assert pickle.loads(pickle.dumps(obj)) == obj
    listy = PSObject(["System.Collections.ArrayList"], None, {}, {"Note": 1}, items=[10, 20])
    assert listy[1] == 20 and listy.Note == 1
    with pytest.raises(TypeError):
        obj[0]


def test_pscustomobject_helpers():
    @dataclasses.dataclass
    class Row:
        a: int
        b: str

    obj = to_pscustomobject(Row(1, "x"))
    assert obj.type_names[0] == "System.Management.Automation.PSCustomObject"
    assert obj.extended_properties == {"a": 1, "b": "x"}
    assert PSCustomObject({"a": 1}, b=2).properties == {"a": 1, "b": 2}
    with pytest.raises(TypeError):
        to_pscustomobject(5)


def test_clixml_loads_decodes_one_value_without_a_connection():
    from psremote._native import clixml_loads

    xml = (
        '\ufeff<Obj RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T><T>System.Object</T></TN>'
        '<ToString>row</ToString><MS><S N="Name">a_x0020_b</S><I32 N="Id">7</I32><Nil N="Gone" />'
        '<DT N="When">2024-02-29T12:34:56.789-07:00</DT><Obj N="Items" RefId="1"><TN RefId="1"><T>System.Object[]</T></TN>'
        '<LST><B>true</B><Obj RefId="2"><MS><S N="k">v</S></MS></Obj><Ref RefId="2" /></LST></Obj></MS></Obj>'
    ).encode()
    obj = clixml_loads(xml)
    assert isinstance(obj, PSObject)
    assert obj.type_names[0] == "System.Management.Automation.PSCustomObject" and str(obj) == "row"
    assert (obj.Name, obj.Id, obj.Gone) == ("a b", 7, None)
    assert obj.When == datetime.datetime(2024, 2, 29, 12, 34, 56, 789000, tzinfo=datetime.timezone(datetime.timedelta(hours=-7)))
    assert obj.Items[0] is True and obj.Items[1].k == "v"
    assert obj.Items[2] is obj.Items[1]  # a <Ref> is the same Python object
    assert clixml_loads(b"<S>plain</S>") == "plain"
    for bad in (b"<S>unclosed", b"", b"<I32>x</I32>"):
        with pytest.raises(ValueError):
            clixml_loads(bad)
    with pytest.raises(ValueError, match="session key"):
        clixml_loads(b"<SS>AAAA</SS>")


def test_clixml_loads_list_of_objects_of_one_shape():
    from psremote._native import clixml_loads

    rows = "".join(
        f'<Obj RefId="{i + 1}">'
        + ('<TN RefId="0"><T>Row</T><T>System.Object</T></TN>' if i == 0 else '<TNRef RefId="0" />')
        + f'<MS><S N="Name">r{i}</S><DT N="At">2024-01-01T00:00:0{i}+02:00</DT></MS></Obj>'
        for i in range(3)
    )
    xml = f'<Obj RefId="0"><TN RefId="1"><T>System.Object[]</T></TN><LST>{rows}</LST></Obj>'
    a, b, c = clixml_loads(xml.encode())
    assert [r.Name for r in (a, b, c)] == ["r0", "r1", "r2"]
    # Each object has its own list of type names (changing one leaves the others alone).
    assert a.type_names == b.type_names == ["Row", "System.Object"] and a.type_names is not b.type_names
    a.type_names.append("Extra")
    assert b.type_names == ["Row", "System.Object"]
    assert b.At.utcoffset() == c.At.utcoffset() == datetime.timedelta(hours=2)
