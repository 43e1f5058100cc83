"""Bad input never crashes outreach and never sends from an invalid campaign (hypothesis).

Generated broken ``outreach.toml`` files, campaign files, templates and customer CSV rows go
through the real command line (``outreach.cli.main`` in-process for speed, a handful through the
real ``outreach`` subprocess). Whatever the input: no traceback; a configuration error exits 2
naming the file and the key; nothing is sent from an invalid campaign (the outbox folder stays
empty); a bad audience row is reported with file:line and skipped while the good rows proceed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path
from zoneinfo import ZoneInfo

from croniter import croniter
from guarantees_support import audience, newsletter, phone, run_inprocess
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outreach.testing import Project
from outreach.testing.project import DEFAULT_CUSTOMERS_HEADER

NOW = "2026-11-24T00:10"
SETTINGS = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------- TOML
def toml_str(s: str) -> str:
    """A TOML basic string for any text (control characters escaped as TOML requires)."""
    out = []
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else toml_str(k)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        return toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def toml_doc(doc: dict) -> str:
    """A TOML document with every table inline: simple, and any nesting is valid TOML."""
    return "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in doc.items())


scalars = st.one_of(st.integers(-10**6, 10**6), st.booleans(), st.floats(allow_nan=False),
                    st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(min_size=1, max_size=6),
                                                                       inner, max_size=3)),
                      max_leaves=6)
not_str = st.one_of(st.integers(), st.booleans(), st.floats(allow_nan=False),
                    st.lists(st.integers(), max_size=2),
                    st.dictionaries(st.text(min_size=1, max_size=4), st.integers(), max_size=2))
not_int = st.one_of(st.text(max_size=6), st.booleans(), st.floats(allow_nan=False),
                    st.lists(st.integers(), max_size=2))


def _not_zone(s: str) -> bool:
    """A name that is not a time zone (region folders such as "Europe" included)."""
    try:
        ZoneInfo(s)
        return False
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return True
    except OSError:
        return False


def _not_duration(s) -> bool:
    from outreach.settings import parse_duration

    try:
        parse_duration(s)
        return False
    except ValueError:
        return True


bad_duration = st.one_of(not_str, st.text(max_size=8).filter(_not_duration))


def base_config() -> dict:
    return {
        "timezone": "America/Los_Angeles",
        "ledger": "sqlite:///outreach.db",
        "audience": {"source": "csv", "customers": "customers.csv", "events": "events.csv"},
        "channels": {"email": {"plugin": "outbox-email", "path": "outbox/email"},
                     "sms": {"plugin": "outbox-sms", "path": "outbox/sms"}},
        "caps": [{"max": 3, "per": "7d"}],
        "quiet_hours": {"sms": False},
        "retry": {"max_attempts": 5},
    }


#: (key path as problems name it, strategy of values known to be wrong there)
CONFIG_BREAKS = [
    ("timezone", st.one_of(not_str, st.text(min_size=1, max_size=20).filter(_not_zone))),
    ("batch_size", st.one_of(not_int, st.integers(max_value=0))),
    ("claim_ttl", bad_duration),
    ("ledger", st.one_of(not_str, st.sampled_from(["mysql://x/y", "redis://h", "outreach.db"]))),
    ("audience.source", st.one_of(not_str, st.text(min_size=1, max_size=8).map(lambda s: "no-" + s))),
    ("audience.customers", st.one_of(not_str, st.just(""))),
    ("channels.sms.plugin", st.one_of(not_str, st.text(max_size=8).map(lambda s: "nope-" + s))),
    ("channels.sms.concurrency", st.one_of(not_int, st.integers(max_value=0))),
    ("channels.sms.timeout", st.one_of(st.text(max_size=6), st.booleans(), st.floats(max_value=0.0),
                                       st.lists(st.integers(), max_size=2))),
    ("channels.sms.rate_limit", st.one_of(st.text(max_size=6), st.booleans())),
    ("channels.email.path", st.one_of(not_str, st.just(""))),
    ("caps[0].max", st.one_of(not_int, st.integers(max_value=-1))),
    ("caps[0].per", bad_duration),
    ("retry.max_attempts", st.one_of(not_int, st.integers(max_value=0))),
    ("retry.backoff", bad_duration),
    ("quiet_hours.sms", st.one_of(st.integers(), st.text(max_size=6), st.lists(st.text(max_size=5),
                                                                               max_size=1))),
]


def _set(doc: dict, path: str, value) -> None:
    parts = re.split(r"\.|\[(\d+)\]\.?", path)
    parts = [p for p in parts if p]
    node = doc
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    node[parts[-1]] = value


def _project(tmp_path: Path) -> Project:
    p = Project(tmp_path / "shop")
    p.customers(audience(3))
    return p


def _clear(p: Project) -> None:
    """Forget what an earlier example wrote (ledger, outbox), keeping the project files."""
    for path in p.root.glob("outreach.db*"):
        path.unlink()
    for path in (p.root / "outbox").rglob("*.json") if (p.root / "outbox").exists() else ():
        path.unlink()


def _assert_config_error(code: int, err: str, file: str, key: str) -> None:
    assert "Traceback" not in err, err
    assert code == 2, (code, err)
    if key.endswith(".plugin") and f"at {key}" in err:
        return  # a channel whose plugin is unavailable is reported by the campaigns that use it
    assert f"{file}: {key}" in err, f"expected {file}: {key} in:\n{err}"


@SETTINGS
@given(data=st.data())
def test_broken_outreach_toml_is_refused_naming_file_and_key(tmp_path, capsys, data):
    """Bad-input guarantee: a wrong value in outreach.toml exits 2 naming the file and key; nothing is sent."""
    p = _project(tmp_path)
    p.campaign("news", newsletter())
    key, strategy = data.draw(st.sampled_from(CONFIG_BREAKS), label="key")
    doc = base_config()
    _set(doc, key, data.draw(strategy, label="value"))
    (p.root / "outreach.toml").write_text(toml_doc(doc), encoding="utf-8")
    _clear(p)
    code, out, err = run_inprocess(p, "validate", capsys=capsys)
    _assert_config_error(code, err, str(p.root / "outreach.toml"), key)
    code, out, err = run_inprocess(p, "run", "--json", "--now", NOW, capsys=capsys)
    _assert_config_error(code, err, str(p.root / "outreach.toml"), key)
    assert p.outbox("sms") == [] and p.outbox("email") == []


@SETTINGS
@given(key=st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1,
                  max_size=10).filter(lambda k: k not in (
    "timezone", "ledger", "batch_size", "claim_ttl", "audience", "channels", "caps", "quiet_hours",
    "retry")), value=values)
def test_unknown_keys_in_outreach_toml_are_named(tmp_path, capsys, key, value):
    """Bad-input guarantee: a misspelt outreach.toml key is an error that names it, not ignored."""
    p = _project(tmp_path)
    p.campaign("news", newsletter())
    doc = base_config()
    doc[key] = value
    (p.root / "outreach.toml").write_text(toml_doc(doc), encoding="utf-8")
    code, out, err = run_inprocess(p, "validate", capsys=capsys)
    assert "Traceback" not in err and code == 2, (code, err)
    assert str(p.root / "outreach.toml") in err and key in err


TOML_NOISE = st.lists(st.one_of(st.sampled_from(
    ["[", "]", "[[caps]]", "[channels.sms]", "=", '"', "'", '"""', "\n", "timezone", "channels",
     "plugin = \"outbox-sms\"", "{", "}", ",", "#", "\\", "1d", "true", "0x", "nan", "é", "Ω",
     "\x00", "\x7f"]), st.text(max_size=5)), max_size=25).map("".join)


@SETTINGS
@given(text=TOML_NOISE)
def test_garbage_outreach_toml_is_refused(tmp_path, capsys, text):
    """Bad-input guarantee: an outreach.toml that is not TOML (or not a deployment) exits 2, naming the file."""
    p = _project(tmp_path)
    p.campaign("news", newsletter())
    (p.root / "outreach.toml").write_text(text, encoding="utf-8")
    for args in (("validate",), ("run", "--json", "--now", NOW)):
        code, out, err = run_inprocess(p, *args, capsys=capsys)
        assert "Traceback" not in err and code == 2, (args, code, err)
        assert str(p.root / "outreach.toml") in err
    assert p.outbox("sms") == []


# ---------------------------------------------------------------------------------------- campaigns
def base_campaign() -> dict:
    return {"name": "news", "rule": "newsletter", "schedule": "0 * * * *", "start": "2026-11-24",
            "channels": ["sms"], "sms": {"body": "Hi {{ customer.first_name }}"}}


def _not_cron(s) -> bool:
    return not (isinstance(s, str) and croniter.is_valid(s))


def _not_iso(s: str) -> bool:
    from datetime import datetime

    try:
        datetime.fromisoformat(s)
        return False
    except ValueError:
        return True


CAMPAIGN_BREAKS = [
    ("name", st.one_of(not_str, st.sampled_from(["", "has space", "-dash", "x" * 64, "ünï"]))),
    ("rule", st.one_of(not_str, st.text(max_size=8).map(lambda s: "nope-" + s))),
    ("schedule", st.one_of(not_str, st.text(max_size=12).filter(_not_cron))),
    ("start", st.one_of(not_str, st.text(max_size=12).filter(_not_iso))),
    ("channels", st.one_of(st.integers(), st.booleans(), st.just([]),
                           st.lists(st.text(max_size=5).map(lambda s: "no-" + s), min_size=1,
                                    max_size=2))),
    ("category", st.one_of(not_str, st.text(max_size=10).filter(
        lambda s: s not in ("marketing", "transactional")))),
    ("priority", not_int),
    ("where", st.one_of(not_str, st.sampled_from(["customer.(", "{{", "1 +", "customer.first_name ==",
                                                   "customer['x'", "not"]))),
    ("params", st.one_of(scalars, st.dictionaries(st.text(min_size=1, max_size=5), scalars,
                                                  min_size=1, max_size=2))),
    ("sample", scalars),
    ("sms.body", not_str),
    ("sms.subject", scalars),
    ("sms", st.one_of(st.integers(), st.text(max_size=5), st.booleans())),
]


@SETTINGS
@given(data=st.data())
def test_broken_campaign_is_refused_and_nothing_is_sent(tmp_path, capsys, data):
    """Bad-input guarantee: a wrong campaign value exits 2 naming file and key; no campaign sends."""
    p = _project(tmp_path)
    p.campaign("other", newsletter())  # a valid campaign beside it: refused with the whole project
    key, strategy = data.draw(st.sampled_from(CAMPAIGN_BREAKS), label="key")
    doc = base_campaign()
    _set(doc, key, data.draw(strategy, label="value"))
    (p.root / "campaigns" / "news.toml").write_text(toml_doc(doc), encoding="utf-8")
    _clear(p)
    code, out, err = run_inprocess(p, "validate", capsys=capsys)
    top = key.split(".")[0]
    assert "Traceback" not in err and code == 2, (code, err)
    assert "campaigns/news.toml" in err and (key in err or f": {top}" in err), err
    code, out, err = run_inprocess(p, "run", "--json", "--now", NOW, capsys=capsys)
    assert "Traceback" not in err and code == 2, (code, err)
    assert p.outbox("sms") == [] and not (p.root / "outbox").exists()


CAMPAIGN_NOISE = st.lists(st.one_of(st.sampled_from(
    ['name = "news"\n', 'rule = "newsletter"\n', "[sms]\n", 'body = "', '"', "'''", "{{", "}}",
     "{%", "%}", "=", "[", "]", "\n", "channels = [", "\"sms\"", "]\n", "\\u00", "\\", "#"]),
    st.text(max_size=5)), max_size=20).map("".join)


@SETTINGS
@given(text=CAMPAIGN_NOISE)
def test_garbage_campaign_file_is_refused(tmp_path, capsys, text):
    """Bad-input guarantee: a campaign file that is not valid TOML (or not a campaign) sends nothing."""
    p = _project(tmp_path)
    (p.root / "campaigns" / "news.toml").write_text(text, encoding="utf-8")
    _clear(p)
    code, out, err = run_inprocess(p, "run", "--json", "--now", NOW, capsys=capsys)
    assert "Traceback" not in err and code == 2, (code, err)
    assert "campaigns/news.toml" in err
    assert p.outbox("sms") == []


# ---------------------------------------------------------------------------------------- templates
JINJA_BITS = st.sampled_from([
    "{{", "}}", "{%", "%}", "{#", "#}", " customer.first_name ", " customer.nope ", "customer",
    " occurrence ", "if ", "endif", "else", "for x in customer.tags", "endfor", "|upper", "|length",
    "|nope", "(", ")", "'", '"', "[", "]", "raw", "endraw", "set x = 1", "x", ".", "~", "+", "1",
    "0", "/", "%", "-", "\n", "é", "Աննա", "😀", "{{ customer.first_name }}",
    "{% if customer.first_name %}", "{% endif %}", "{{ customer['last_name'] }}", "{{ 1/0 }}",
])
TEMPLATES = st.lists(st.one_of(JINJA_BITS, st.text(max_size=4)), max_size=14).map("".join)


@SETTINGS
@given(template=TEMPLATES)
def test_random_templates_are_validated_or_refused_never_crash(tmp_path, capsys, template):
    """Bad-input guarantee: any template either validates and renders, or is refused by name; never a crash."""
    p = _project(tmp_path)
    p.customers("c0,Անի,Պետրոսյան,a@example.com,+37491000000,Asia/Yerevan,hy,yes,yes,vip\n"
                "c1,José,,j@example.com,+37491000001,,en,yes,yes,")
    p.campaign("news", newsletter(body="BODY").replace('"BODY"', toml_str(template)))
    _clear(p)
    code, out, err = run_inprocess(p, "validate", capsys=capsys)
    assert "Traceback" not in err and code in (0, 2), (code, err)
    valid = code == 0
    if not valid:
        assert "campaigns/news.toml: sms.body" in err, err
    code, out, err = run_inprocess(p, "run", "--json", "--now", NOW, capsys=capsys)
    assert "Traceback" not in err, err
    if not valid:
        assert code == 2 and p.outbox("sms") == [] and p.messages() == []
        return
    assert code in (0, 1), (code, err)
    rows = p.messages()
    assert len(rows) == 2
    for r in rows:  # sent, or failed with the render error: never lost
        assert r["state"] == "sent" or (r["state"] == "failed" and "cannot render" in r["error"])
    assert len(p.outbox("sms")) == sum(r["state"] == "sent" for r in rows)


# ---------------------------------------------------------------------------------------- CSV rows
ZONES = ["", "Asia/Yerevan", "Asia/Manila", "Asia/Baku", "UTC", "America/Los_Angeles"]
BAD_ZONES = st.one_of(st.sampled_from(["Mars/Olympus", "Not/A_Zone", "+25:00", "Asia/Atlantis",
                                       "../../etc/passwd", "UTC+99"]),
                      st.text(min_size=1, max_size=8).map(lambda s: "No/" + s.strip()).filter(_not_zone))
YES = ["yes", "Y", "true", "1", "opt-in", "YES", " yes "]
BAD_CONSENT = st.one_of(st.sampled_from(["maybe", "ja", "да", "այո", "oui", "2", "yes please"]),
                        st.text(min_size=1, max_size=6).filter(
                            lambda s: s.strip().lower() not in {"yes", "y", "true", "1", "opt-in",
                                                                "opted-in", "no", "n", "false", "0",
                                                                "", "opt-out", "opted-out"}))
#: Names: any letters and marks (Armenian, Tagalog, Azerbaijani, emoji...), no line breaks.
NAMES = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)
ROW_KINDS = st.sampled_from(["good", "good", "good", "columns", "zone", "consent", "noid"])


def _csv_line(fields: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)
    return buf.getvalue()


@SETTINGS
@given(kinds=st.lists(ROW_KINDS, min_size=1, max_size=12), data=st.data())
def test_bad_csv_rows_are_reported_by_line_and_good_rows_proceed(tmp_path, capsys, kinds, data):
    """Bad-input guarantee: bad audience rows are reported with file:line and skipped; the good ones are sent."""
    p = _project(tmp_path)
    p.campaign("news", newsletter())
    lines = [DEFAULT_CUSTOMERS_HEADER + "\n"]
    good, bad_lines = set(), set()
    for i, kind in enumerate(kinds):
        name = data.draw(NAMES, label="name")
        row = [f"c{i}", name, "Family", f"r{i}@example.com", phone(i),
               data.draw(st.sampled_from(ZONES), label="zone"), "hy", "no",
               data.draw(st.sampled_from(YES), label="consent"), "vip;new"]
        if kind == "columns":
            n = data.draw(st.integers(1, 14).filter(lambda n: n != 10), label="columns")
            row = (row + ["extra"] * 5)[:n]
        elif kind == "zone":
            row[5] = data.draw(BAD_ZONES, label="bad zone")
        elif kind == "consent":
            row[8] = data.draw(BAD_CONSENT, label="bad consent")
        elif kind == "noid":
            row[0] = data.draw(st.sampled_from(["", " ", "\t"]), label="empty id")
        lines.append(_csv_line(row))
        (good if kind == "good" else bad_lines).add(f"c{i}" if kind == "good" else len(lines))
    (p.root / "customers.csv").write_text("".join(lines), encoding="utf-8")
    _clear(p)
    code, out, err = run_inprocess(p, "run", "--json", "--now", NOW, capsys=capsys)
    assert "Traceback" not in err and code == 0, (code, err)
    report = json.loads(out)
    assert report["invalid_rows"]["count"] == len(bad_lines)
    reported = set()
    for problem in report["invalid_rows"]["first"]:
        m = re.match(r"^(.*):(\d+): ", problem)
        assert m and m.group(1).endswith("customers.csv"), problem
        reported.add(int(m.group(2)))
    assert reported == bad_lines
    assert {m["customer"] for m in p.outbox("sms")} == good


def test_a_handful_of_bad_inputs_through_the_real_command(tmp_path):
    """Bad-input guarantee: the real `outreach` process shows no traceback and exits 2 naming file and key."""
    cases = []
    p1 = _project(tmp_path / "a")
    doc = base_config()
    doc["channels"]["sms"]["concurrency"] = "lots"
    (p1.root / "outreach.toml").write_text(toml_doc(doc), encoding="utf-8")
    p1.campaign("news", newsletter())
    cases.append((p1, "outreach.toml: channels.sms.concurrency"))
    p2 = _project(tmp_path / "b")
    p2.campaign("news", 'rule = "newsletter"\nschedule = "0 * * * *"\nchannels = ["sms"]\n'
                        '[sms]\nbody = "{{ customer.first_name "\n')
    cases.append((p2, "campaigns/news.toml: sms.body"))
    p3 = _project(tmp_path / "c")
    (p3.root / "campaigns" / "news.toml").write_text('name = "news"\nrule = [\n', encoding="utf-8")
    cases.append((p3, "campaigns/news.toml: not valid TOML"))
    p4 = _project(tmp_path / "d")
    p4.campaign("news", 'priority = "high"\n' + newsletter())
    cases.append((p4, "campaigns/news.toml: priority"))
    # And bad rows through the real process: reported, skipped, the rest sent.
    p5 = _project(tmp_path / "e")
    p5.campaign("news", newsletter())
    p5.customers(audience(2) + "\nc9,Bad,Zone,z@example.com,+37491000009,Mars/Olympus,en,yes,yes,"
                                "\nc8,Bad,Consent,y@example.com,+37491000008,UTC,en,yes,maybe,")
    import subprocess
    import sys
    commands = [("validate",), ("run", "--json", "--now", NOW), ("validate",),
                ("run", "--json", "--now", NOW), ("run", "--now", NOW)]
    procs = [(p, where, args, subprocess.Popen([sys.executable, "-m", "outreach", *args], cwd=p.root,
                                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                               text=True))
             for (p, where), args in zip(cases + [(p5, None)], commands)]
    for p, where, args, proc in procs:
        out, err = proc.communicate(timeout=120)
        assert "Traceback" not in err, err
        if where is None:
            assert proc.returncode == 0, err
            assert "customers.csv:4: timezone 'Mars/Olympus'" in err
            assert "customers.csv:5: consent_sms is 'maybe'" in err
            assert {m["customer"] for m in p.outbox("sms")} == {"c0", "c1"}
            continue
        assert proc.returncode == 2, (args, proc.returncode, err)
        assert where in err, (where, err)
        assert p.outbox("sms") == []


# ---------------------------------------------------------------------------------------- known bugs
def _good(i: int) -> bytes:
    return f"c{i},N{i},F,r{i}@example.com,{phone(i)},UTC,en,yes,yes,".encode()


def test_a_row_that_is_not_utf8_is_skipped_and_the_rest_are_sent(sqlite_project, capsys):
    """Bad-input guarantee: a row with bytes that are not UTF-8 is reported by line; the good rows proceed."""
    p = sqlite_project
    p.campaign("news", newsletter())
    (p.root / "customers.csv").write_bytes(b"\n".join([
        DEFAULT_CUSTOMERS_HEADER.encode(), _good(0), b"c1,\xff\xfeAni,F,a@example.com,"
        + phone(1).encode() + b",UTC,en,yes,yes,", _good(2)]) + b"\n")
    code, out, err = run_inprocess(p, "run", "--json", "--now", NOW, capsys=capsys)
    assert code == 0, err
    [problem] = json.loads(out)["invalid_rows"]["first"]
    assert ":3:" in problem, problem
    assert {m["customer"] for m in p.outbox("sms")} == {"c0", "c2"}


def test_an_oversized_field_is_skipped_and_the_rest_are_sent(sqlite_project, capsys):
    """Bad-input guarantee: a row the csv module cannot read is reported by line; the good rows proceed."""
    p = sqlite_project
    p.campaign("news", newsletter())
    (p.root / "customers.csv").write_bytes(b"\n".join([
        DEFAULT_CUSTOMERS_HEADER.encode(), _good(0), b'c1,"' + b"x" * 200_000 + b'",F,a@example.com,'
        + phone(1).encode() + b",UTC,en,yes,yes,", _good(2)]) + b"\n")
    code, out, err = run_inprocess(p, "run", "--json", "--now", NOW, capsys=capsys)
    assert code == 0, err
    assert {m["customer"] for m in p.outbox("sms")} == {"c0", "c2"}


def test_a_duplicated_customer_row_does_not_stop_everyone_elses_messages(sqlite_project, capsys):
    """Bad-input guarantee: a customer listed twice is planned once (or reported); the others proceed."""
    p = sqlite_project
    p.campaign("news", newsletter())
    p.customers(audience(3) + "\n" + audience(2).splitlines()[1])  # c1 twice
    code, out, err = run_inprocess(p, "run", "--json", "--now", NOW, capsys=capsys)
    assert code == 0, err
    assert sorted(m["customer"] for m in p.outbox("sms")) == ["c0", "c1", "c2"]


def test_row_problems_name_the_physical_line_after_a_multiline_field(sqlite_project, capsys):
    """Bad-input guarantee: file:line points at the line an editor shows, even after a quoted line break."""
    p = sqlite_project
    p.campaign("news", newsletter())
    (p.root / "customers.csv").write_text(
        DEFAULT_CUSTOMERS_HEADER + "\n" + _good(0).decode() + "\n"
        f'c1,"Ani\nPetrosyan",F,a@example.com,{phone(1)},UTC,en,yes,yes,\n'
        "c2,Bad,Zone,b@example.com,+37491000002,Mars/Olympus,en,yes,yes,\n", encoding="utf-8")
    code, out, err = run_inprocess(p, "run", "--json", "--now", NOW, capsys=capsys)
    [problem] = json.loads(out)["invalid_rows"]["first"]
    assert ":5: timezone" in problem, problem  # header 1, c0 2, c1 3-4, c2 5


def test_a_region_instead_of_a_time_zone_in_a_row_is_skipped(sqlite_project, capsys):
    """Bad-input guarantee: a row whose time zone is a region ("America") is reported; the rest proceed."""
    p = sqlite_project
    p.campaign("news", newsletter())
    p.customers(audience(2) + "\nc5,Ani,P,a@example.com,+37491000005,America,en,yes,yes,")
    code, out, err = run_inprocess(p, "run", "--json", "--now", NOW, capsys=capsys)
    assert code == 0, err
    assert ":4: timezone 'America'" in json.loads(out)["invalid_rows"]["first"][0]
    assert {m["customer"] for m in p.outbox("sms")} == {"c0", "c1"}


def test_a_region_as_the_deployment_time_zone_is_a_config_error(sqlite_project, capsys):
    """Bad-input guarantee: timezone = "Europe" exits 2 naming outreach.toml and the key."""
    p = sqlite_project
    p.configure(timezone="Europe")
    p.campaign("news", newsletter())
    code, out, err = run_inprocess(p, "validate", capsys=capsys)
    assert code == 2 and "outreach.toml: timezone" in err, (code, err)
