"""The file directory: users file, aliases file, several domains, postmaster@,
plus-addressing, reload on change, and logins that fail alike."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer

from mailsuite.workers import InlineWorkers
from mailsuite.directory.files import (
    FileDirectory,
    FileFormatError,
    UserEntry,
    parse_aliases,
    parse_users,
    read_users,
    write_users,
)
from mailsuite.directory.interface import Account, Resolution
from tests.support.server import hashed

DOMAINS = ("example.test", "other.test")


def make_dir(tmp_path: Path, users: str, aliases: str = "", **kw) -> FileDirectory:  # type: ignore[no-untyped-def]
    (tmp_path / "users").write_text(users)
    (tmp_path / "aliases").write_text(aliases)
    # 'Blocking' work runs inline so Deferreds fire at once (no reactor in unit tests).
    return FileDirectory(tmp_path / "users", tmp_path / "aliases", DOMAINS, workers=InlineWorkers(), **kw)


USERS = (
    f"alice@example.test:{hashed('alice-pw')}\n"
    f"bob@example.test:{hashed('bob-pw')}:quota=1000\n"
    f"carol@other.test:{hashed('carol-pw')}\n"
)


def result(d: defer.Deferred):  # type: ignore[no-untyped-def]
    out: list = []
    d.addBoth(out.append)
    assert out, "Deferred did not fire"
    return out[0]


# -- addresses -------------------------------------------------------------------


def test_user_resolves_to_own_mailbox(tmp_path: Path) -> None:
    d = make_dir(tmp_path, USERS)
    assert d.resolve_now("alice@example.test") == Resolution(mailboxes=("alice@example.test",))


def test_addresses_compare_case_insensitively(tmp_path: Path) -> None:
    d = make_dir(tmp_path, USERS)
    assert d.resolve_now("Alice@EXAMPLE.test").mailboxes == ("alice@example.test",)


def test_unknown_user_is_none(tmp_path: Path) -> None:
    assert make_dir(tmp_path, USERS).resolve_now("nobody@example.test") is None


def test_foreign_domain_is_none(tmp_path: Path) -> None:
    assert make_dir(tmp_path, USERS).resolve_now("alice@elsewhere.test") is None


def test_users_in_several_domains(tmp_path: Path) -> None:
    d = make_dir(tmp_path, USERS)
    assert d.resolve_now("carol@other.test").mailboxes == ("carol@other.test",)
    assert d.resolve_now("carol@example.test") is None


def test_alias_to_several_users(tmp_path: Path) -> None:
    d = make_dir(tmp_path, USERS, "team@example.test: alice@example.test, carol@other.test\n")
    assert d.resolve_now("team@example.test").mailboxes == ("alice@example.test", "carol@other.test")


def test_bare_alias_target_stays_in_the_alias_domain(tmp_path: Path) -> None:
    d = make_dir(tmp_path, USERS, "info@example.test: alice bob\n")
    assert d.resolve_now("info@example.test").mailboxes == ("alice@example.test", "bob@example.test")


def test_alias_to_outside_address_is_a_forward(tmp_path: Path) -> None:
    d = make_dir(tmp_path, USERS, "sales@example.test: alice, partner@far.test\n")
    res = d.resolve_now("sales@example.test")
    assert res.mailboxes == ("alice@example.test",)
    assert res.forwards == ("partner@far.test",)


def test_nested_aliases_expand(tmp_path: Path) -> None:
    d = make_dir(tmp_path, USERS, "all@example.test: team, bob\nteam@example.test: alice\n")
    assert d.resolve_now("all@example.test").mailboxes == ("alice@example.test", "bob@example.test")


def test_alias_loop_terminates(tmp_path: Path) -> None:
    d = make_dir(tmp_path, USERS, "a@example.test: b, alice\nb@example.test: a\n")
    assert d.resolve_now("a@example.test").mailboxes == ("alice@example.test",)


def test_alias_to_unknown_local_address_is_dropped(tmp_path: Path) -> None:
    d = make_dir(tmp_path, USERS, "x@example.test: ghost, alice\n")
    assert d.resolve_now("x@example.test").mailboxes == ("alice@example.test",)


def test_alias_comments_and_blank_lines(tmp_path: Path) -> None:
    d = make_dir(tmp_path, USERS, "# staff\n\nhelp@example.test: bob  # the helpdesk\n")
    assert d.resolve_now("help@example.test").mailboxes == ("bob@example.test",)


def test_duplicate_targets_deliver_once(tmp_path: Path) -> None:
    d = make_dir(tmp_path, USERS, "x@example.test: alice, alice@example.test, y\ny@example.test: alice\n")
    assert d.resolve_now("x@example.test").mailboxes == ("alice@example.test",)


def test_plus_address_delivers_to_the_user(tmp_path: Path) -> None:
    d = make_dir(tmp_path, USERS)
    assert d.resolve_now("alice+lists@example.test").mailboxes == ("alice@example.test",)


def test_plus_address_of_an_alias(tmp_path: Path) -> None:
    d = make_dir(tmp_path, USERS, "team@example.test: bob\n")
    assert d.resolve_now("team+x@example.test").mailboxes == ("bob@example.test",)


def test_plus_address_of_unknown_user_is_none(tmp_path: Path) -> None:
    assert make_dir(tmp_path, USERS).resolve_now("ghost+x@example.test") is None


@pytest.mark.parametrize("domain", DOMAINS)
def test_postmaster_works_for_every_local_domain(tmp_path: Path, domain: str) -> None:
    res = make_dir(tmp_path, USERS).resolve_now(f"postmaster@{domain}")
    assert res is not None and res.mailboxes


def test_postmaster_defaults_to_an_account_of_its_domain(tmp_path: Path) -> None:
    d = make_dir(tmp_path, USERS)
    assert d.resolve_now("postmaster@other.test").mailboxes == ("carol@other.test",)
    assert d.resolve_now("postmaster@example.test").mailboxes[0].endswith("@example.test")


def test_postmaster_alias_wins(tmp_path: Path) -> None:
    d = make_dir(tmp_path, USERS, "postmaster@example.test: bob\n")
    assert d.resolve_now("postmaster@example.test").mailboxes == ("bob@example.test",)
    assert d.resolve_now("POSTMASTER@example.test").mailboxes == ("bob@example.test",)


def test_configured_postmaster_serves_every_domain(tmp_path: Path) -> None:
    d = make_dir(tmp_path, USERS, postmaster="bob@example.test")
    assert d.resolve_now("postmaster@other.test").mailboxes == ("bob@example.test",)


def test_postmaster_of_a_domain_without_accounts(tmp_path: Path) -> None:
    d = make_dir(tmp_path, f"alice@example.test:{hashed('x')}\n")
    assert d.resolve_now("postmaster@other.test").mailboxes == ("alice@example.test",)


def test_sender_addresses_include_aliases(tmp_path: Path) -> None:
    d = make_dir(tmp_path, USERS, "info@example.test: alice\nother@example.test: bob\n")
    assert d.sender_addresses_now("alice@example.test") == ("alice@example.test", "info@example.test")


# -- reload ------------------------------------------------------------------------


def bump_mtime(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_users_file_change_is_picked_up(tmp_path: Path) -> None:
    d = make_dir(tmp_path, USERS)
    assert d.resolve_now("dave@example.test") is None
    with open(tmp_path / "users", "a") as f:
        f.write(f"dave@example.test:{hashed('x')}\n")
    assert d.resolve_now("dave@example.test").mailboxes == ("dave@example.test",)


def test_same_size_edit_is_picked_up_by_mtime(tmp_path: Path) -> None:
    d = make_dir(tmp_path, f"anna@example.test:{hashed('x')}\n")
    assert d.resolve_now("anna@example.test")
    (tmp_path / "users").write_text(f"anne@example.test:{hashed('x')}\n")
    bump_mtime(tmp_path / "users")
    assert d.resolve_now("anna@example.test") is None
    assert d.resolve_now("anne@example.test")


def test_aliases_file_change_is_picked_up(tmp_path: Path) -> None:
    d = make_dir(tmp_path, USERS)
    assert d.resolve_now("info@example.test") is None
    (tmp_path / "aliases").write_text("info@example.test: alice\n")
    bump_mtime(tmp_path / "aliases")
    assert d.resolve_now("info@example.test").mailboxes == ("alice@example.test",)


def test_broken_edit_keeps_the_last_good_version(tmp_path: Path) -> None:
    d = make_dir(tmp_path, USERS)
    assert d.resolve_now("alice@example.test")
    (tmp_path / "users").write_text("this is not a users file\n")
    bump_mtime(tmp_path / "users")
    assert d.resolve_now("alice@example.test").mailboxes == ("alice@example.test",)


def test_missing_files_mean_no_users(tmp_path: Path) -> None:
    d = FileDirectory(tmp_path / "nope", tmp_path / "nope2", DOMAINS, workers=InlineWorkers())
    assert d.resolve_now("alice@example.test") is None


def test_password_change_applies_without_restart(tmp_path: Path) -> None:
    d = make_dir(tmp_path, USERS)
    assert result(d.authenticate("alice@example.test", "alice-pw")) == Account("alice@example.test")
    write_users(tmp_path / "users", {**read_users(tmp_path / "users"),
                                     "alice@example.test": UserEntry("alice@example.test", hashed("new-pw"))})
    bump_mtime(tmp_path / "users")
    assert result(d.authenticate("alice@example.test", "new-pw")) == Account("alice@example.test")
    assert isinstance(result(d.authenticate("alice@example.test", "alice-pw")).value, UnauthorizedLogin)


# -- authentication ---------------------------------------------------------------


def test_right_password_gives_the_account_with_quota(tmp_path: Path) -> None:
    d = make_dir(tmp_path, USERS)
    assert result(d.authenticate("bob@example.test", "bob-pw")) == Account("bob@example.test", 1000)


def test_login_without_domain_uses_the_first_domain(tmp_path: Path) -> None:
    d = make_dir(tmp_path, USERS)
    assert result(d.authenticate("alice", "alice-pw")) == Account("alice@example.test")


def test_login_is_case_insensitive(tmp_path: Path) -> None:
    d = make_dir(tmp_path, USERS)
    assert result(d.authenticate("ALICE@Example.Test", "alice-pw")).name == "alice@example.test"


def test_unknown_user_and_wrong_password_fail_alike(tmp_path: Path) -> None:
    d = make_dir(tmp_path, USERS)
    wrong = result(d.authenticate("alice@example.test", "nope"))
    unknown = result(d.authenticate("ghost@example.test", "nope"))
    assert type(wrong.value) is type(unknown.value) is UnauthorizedLogin
    assert str(wrong.value) == str(unknown.value)


def test_unknown_user_and_wrong_password_take_similar_time(tmp_path: Path) -> None:
    # A hash made as the server makes them (tests.harness stores cheap ones).
    from mailsuite.directory.passwords import hash_password

    d = make_dir(tmp_path, f"alice@example.test:{hash_password('alice-pw')}\n")

    def timed(login: str) -> float:
        best = 1e9
        for i in range(3):
            t0 = time.perf_counter()
            result(d.authenticate(login, f"wrong-{i}"))
            best = min(best, time.perf_counter() - t0)
        return best

    ratio = timed("ghost@example.test") / timed("alice@example.test")
    assert 0.5 < ratio < 2.0


def test_successful_login_is_cached_but_not_a_wrong_one(tmp_path: Path) -> None:
    d = make_dir(tmp_path, USERS)
    result(d.authenticate("alice@example.test", "alice-pw"))
    t0 = time.perf_counter()
    assert result(d.authenticate("alice@example.test", "alice-pw")) == Account("alice@example.test")
    assert time.perf_counter() - t0 < 0.01  # no second bcrypt
    assert isinstance(result(d.authenticate("alice@example.test", "alice-pwX")).value, UnauthorizedLogin)


def test_plaintext_entries_need_the_config_switch(tmp_path: Path) -> None:
    users = "pat@example.test:{PLAIN}pat-pw\n"
    assert isinstance(result(make_dir(tmp_path, users).authenticate("pat@example.test", "pat-pw")).value,
                      UnauthorizedLogin)
    d = make_dir(tmp_path, users, allow_plaintext_passwords=True)
    assert result(d.authenticate("pat@example.test", "pat-pw")) == Account("pat@example.test")


# -- file formats -----------------------------------------------------------------


def test_users_file_round_trip_is_atomic_and_private(tmp_path: Path) -> None:
    path = tmp_path / "users"
    users = {
        "a@example.test": UserEntry("a@example.test", "$2b$10$abc"),
        "b@example.test": UserEntry("b@example.test", "$2b$10$def", 5000),
    }
    write_users(path, users)
    assert read_users(path) == users
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["users"]  # no temp file left behind
    assert path.read_text() == "a@example.test:$2b$10$abc\nb@example.test:$2b$10$def:quota=5000\n"


def test_users_file_errors_name_the_line() -> None:
    with pytest.raises(FileFormatError, match="users file line 2"):
        parse_users("a@example.test:$2b$x\nno-colon-here\n")
    with pytest.raises(FileFormatError, match="unknown field"):
        parse_users("a@example.test:$2b$x:colour=blue\n")


def test_aliases_file_errors_name_the_line() -> None:
    with pytest.raises(FileFormatError, match="aliases file line 1"):
        parse_aliases("no-domain: alice\n")
    with pytest.raises(FileFormatError, match="has no target"):
        parse_aliases("x@example.test:\n")


def test_users_file_comments_are_ignored() -> None:
    assert list(parse_users("# accounts\n\na@example.test:$2b$x\n")) == ["a@example.test"]
