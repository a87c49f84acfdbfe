"""The Sieve interpreter against the RFCs' own example scripts (RFC 5228 and the
extension RFCs), plus the limits that stop a runaway script."""

from __future__ import annotations

import pytest

from mailsuite.sieve.grammar import compile_script
from mailsuite.sieve.interpreter import Envelope, Interpreter, Outcome, Script
from mailsuite.sieve.message import Message
from mailsuite.sieve.parser import SieveSyntaxError
from tests.support.sieve import FakeHost as Host


MSG = (b"Return-Path: <x@y>\nFrom: Wile E. Coyote <coyote@ACME.Example.COM>\nTo: me@example.com\n"
       b"Subject: [acme-users] [fwd] version 1.0 is out\nDate: Tue, 1 Apr 1997 09:06:31 -0800\n"
       b"Message-ID: <1@acme>\nX-Priority: 2\n\nHello world, MAKE MONEY FAST!\n")


def run(src: str | bytes, msg: bytes = MSG, sender: str = "coyote@acme.example.com",
        rcpt: str = "me@example.com", host: Host | None = None, *more: str) -> Outcome:
    scripts = []
    for s in (src, *more):
        cmds, req = compile_script(s.encode() if isinstance(s, str) else s)
        scripts.append(Script("t", cmds, req))
    return Interpreter(Message(msg), Envelope(sender, rcpt, rcpt), host or Host(),
                       authserv_id="mail.example.com").run(scripts)


def folders(out: Outcome) -> list[str]:
    return [d.mailbox for d in out.deliveries]


RFC5228_EXAMPLE = r'''
#
# Example Sieve Filter
# Declare any optional features or extension used by the script
#
require ["fileinto"];

# Handle messages from known mailing lists
if header :is "Sender" "owner-ietf-mta-filters@imc.org"
        {
        fileinto "filter";  # move to "filter" mailbox
        }
#
# Keep all messages to or from people in my company
#
elsif address :DOMAIN :is ["From", "To"] "example.com"
        {
        keep;               # keep in "In" mailbox
        }
elsif anyof (NOT address :all :contains
               ["To", "Cc", "Bcc"] "me@example.com",
             header :matches "subject"
               ["*make*money*fast*", "*university*dipl*mas*"])
        {
        fileinto "spam";   # move to "spam" mailbox
        }
else
        {
        # Move all other (non-company) mail to "personal"
        # mailbox.
        fileinto "personal";
        }
'''


def test_rfc5228_example_script():
    assert folders(run(RFC5228_EXAMPLE)) == ["INBOX"]  # To: me@example.com is "my company"
    other = MSG.replace(b"To: me@example.com", b"To: friend@elsewhere.org")
    assert folders(run(RFC5228_EXAMPLE, other)) == ["spam"]  # not to me
    listed = b"Sender: owner-ietf-mta-filters@imc.org\n" + other
    assert folders(run(RFC5228_EXAMPLE, listed)) == ["filter"]
    personal = other.replace(b"To: friend@elsewhere.org", b"Cc: me@example.com").replace(
        b"From: Wile E. Coyote <coyote@ACME.Example.COM>", b"From: a@b.org")
    assert folders(run(RFC5228_EXAMPLE, personal)) == ["personal"]


def test_implicit_keep_discard_stop_and_one_copy_per_folder():
    assert folders(run("")) == ["INBOX"]
    out = run("discard;")
    assert out.deliveries == [] and out.discarded
    assert folders(run('require "fileinto"; fileinto "A"; fileinto "A"; keep; keep;')) == ["A", "INBOX"]
    assert folders(run('require "fileinto"; fileinto "A"; stop; keep;')) == ["A"]
    assert folders(run('require ["fileinto", "copy"]; fileinto :copy "A";')) == ["A", "INBOX"]


def test_comparators_and_match_types():
    assert folders(run('if header :is "subject" "[ACME-USERS] [fwd] version 1.0 is out" { discard; }')) == []
    assert folders(run('if header :comparator "i;octet" :is "subject" "[ACME-USERS] [fwd] version 1.0 is out"'
                       ' { discard; }')) == ["INBOX"]
    assert folders(run('if header :contains "from" "acme.example" { discard; }')) == []
    assert folders(run('if header :matches "subject" "*version ?.0*" { discard; }')) == []
    assert folders(run(r'if header :matches "subject" "\\[*" { discard; }')) == []
    assert folders(run('if exists ["From", "X-None"] { discard; }')) == ["INBOX"]
    assert folders(run('if size :over 10 { discard; }')) == []
    assert folders(run('if size :under 1K { discard; }')) == []
    assert folders(run('if not true { discard; }')) == ["INBOX"]
    assert folders(run('if allof (true, false) { discard; }')) == ["INBOX"]


def test_linear_time_wildcards():
    """A pattern that makes a backtracking regex take minutes answers at once."""
    long_subject = b"Subject: " + b"a" * 20000 + b"\n"
    out = run('if header :matches "subject" "*a*a*a*a*a*a*a*a*a*b" { discard; }', long_subject + b"\nx\n")
    assert folders(out) == ["INBOX"] and out.error is None


RFC5229_EXAMPLE = '''
require ["fileinto", "variables"];
if header :matches "List-ID" "*<*@*" {
    fileinto "INBOX.lists.${2}"; stop;
}
if header :matches "Subject" "[*] *" {
    fileinto "INBOX.lists.${1}"; stop;
}
'''


def test_rfc5229_match_variables():
    assert folders(run(RFC5229_EXAMPLE)) == ["INBOX.lists.acme-users"]
    listed = b"List-ID: Coyotes <coyote-list@lists.acme.example>\n" + MSG
    assert folders(run(RFC5229_EXAMPLE, listed)) == ["INBOX.lists.coyote-list"]
    # "${0} is the matching address, ${1} is always the empty string, ${2} is ACME.Example"
    out = run('''require ["fileinto", "variables"];
        if address :matches ["To", "From"] ["coyote@**.com", "wile@**.com"] {
            fileinto "INBOX.business.${2}.${1}x"; }''')
    assert folders(out) == ["INBOX.business.ACME.Example.x"]


def test_rfc5229_set_and_modifiers():
    out = run('''require ["variables", "fileinto"];
        set "honorific" "Mr"; set "last_name" "Coyote";
        set "a" "juMBlEd lETteRS";
        set :length "len" "${a}";
        set :lower "lower" "${a}";
        set :upperfirst "uf" "${a}";
        set :upperfirst :lower "ufl" "${a}";
        set :quotewildcard "q" "Rock*";
        fileinto "${HONORIFIC} ${last_name}|${len}|${lower}|${uf}|${ufl}|${q}|${unknown}";''')
    assert folders(out) == ["Mr Coyote|15|jumbled letters|JuMBlEd lETteRS|Jumbled letters|Rock\\*|"]
    out = run('require ["variables"]; set "x" "abc"; if string :is "${x}" "abc" { discard; }')
    assert out.deliveries == []


def test_vacation_rfc5230_and_seconds_rfc6131():
    out = run('''require "vacation";
        if header :contains "subject" "cyrus" { vacation "I'm out -- send mail to cyrus-bugs"; }
        else { vacation "I'm out -- call me at +1 304 555 0123"; }''')
    assert out.vacation is not None and "304" in out.vacation.reason
    assert out.vacation.seconds == 7 * 86400 and folders(out) == ["INBOX"]
    out = run('require ["vacation-seconds"]; vacation :seconds 1800 :subject "Away" :from "me@example.com"'
              ' :addresses ["alias@example.com"] :handle "h" "gone";')
    assert (out.vacation.seconds, out.vacation.subject, out.vacation.handle) == (1800, "Away", "h")
    with pytest.raises(SieveSyntaxError):
        compile_script(b'require "vacation"; vacation :seconds 5 "x";')


def test_imap4flags_rfc5232():
    out = run(r'''require ["imap4flags", "fileinto", "variables"];
        if header :contains "from" "coyote@acme" {
            setflag "flagvar" "\\Flagged";
            fileinto :flags "${flagvar}" "INBOX.From Boss";
        }
        addflag ["\\Seen", "$Work"];
        removeflag "$Work";
        if hasflag :contains "seen" { addflag "\\Answered"; }
        keep;''')
    assert [(d.mailbox, d.flags) for d in out.deliveries] == [
        ("INBOX.From Boss", ("\\Flagged",)), ("INBOX", ("\\Seen", "\\Answered"))]


def test_subaddress_rfc5233_and_envelope():
    script = '''require ["envelope", "subaddress", "fileinto"];
        if envelope :user "to" "postmaster" { fileinto "inbox.postmaster"; stop; }
        if envelope :detail :is "to" "mta-filters" { fileinto "inbox.ietf-mta-filters"; stop; }
        if envelope :domain "from" "acme.example.com" { fileinto "acme"; }'''
    assert folders(run(script, rcpt="postmaster+x@example.com")) == ["inbox.postmaster"]
    assert folders(run(script, rcpt="me+mta-filters@example.com")) == ["inbox.ietf-mta-filters"]
    assert folders(run(script)) == ["acme"]
    assert folders(run(script, sender="")) == ["INBOX"]


def test_relational_rfc5231():
    num = 'require ["relational", "comparator-i;ascii-numeric", "fileinto"];'
    assert folders(run(num + 'if header :value "lt" :comparator "i;ascii-numeric" "x-priority" "3" '
                             '{ fileinto "urgent"; }')) == ["urgent"]
    assert folders(run(num + 'if address :count "ge" :comparator "i;ascii-numeric" ["to", "cc"] "2" '
                             '{ fileinto "many"; }')) == ["INBOX"]
    assert folders(run(num + 'if header :count "eq" :comparator "i;ascii-numeric" "from" "1" '
                             '{ fileinto "one"; }')) == ["one"]


def test_body_rfc5173():
    assert folders(run('require "body"; if body :raw :contains "MAKE MONEY FAST" { discard; }')) == []
    mime = (b"From: a@b\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=XX\n\n--XX\n"
            b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
            b"R3LDvMOfZSBhdXMgQmVybGlu\n--XX\nContent-Type: image/png\n\nbinary\n--XX--\n")
    assert folders(run('require "body"; if body :text :contains "Grüße" { discard; }', mime)) == []
    assert folders(run('require "body"; if body :content "image" :contains "binary" { discard; }', mime)) == []
    assert folders(run('require "body"; if body :text :contains "binary" { discard; }', mime)) == ["INBOX"]


def test_date_rfc5260_and_index():
    out = run('''require ["date", "relational", "fileinto"];
        if allof(address :domain "from" "acme.example.com",
                 date :value "ge" :originalzone "date" "hour" "09",
                 date :value "lt" :originalzone "date" "hour" "17")
        { fileinto "urgent"; }''')
    assert folders(out) == ["urgent"]
    assert folders(run('require ["date", "fileinto"]; if date :zone "+0000" "date" "date" "1997-04-01" '
                       '{ fileinto "utc"; }')) == ["utc"]
    two = b"Received: from a\nReceived: from b\n" + MSG
    assert folders(run('require ["index", "fileinto"]; if header :index 1 :last "received" "from b" '
                       '{ fileinto "last"; }', two)) == ["last"]
    assert folders(run('require ["date", "variables", "fileinto"]; if currentdate :matches "year" "*" '
                       '{ fileinto "y${1}"; }'))[0].startswith("y20")


def test_editheader_rfc5293_and_protected_fields():
    msg = Message(b"Received: x\nX-Spam: 1\nX-Spam: 2\nSubject: s\n\nbody\n")
    src = b'''require ["editheader"];
        addheader "X-Source" "mailsuite";
        addheader :last "X-Last" "end";
        deleteheader :index 1 :last "X-Spam";
        deleteheader "Received";
        addheader "Auto-Submitted" "no";'''
    cmds, req = compile_script(src)
    Interpreter(msg, Envelope("", "a@b", "a@b"), Host()).run([Script("t", cmds, req)])
    assert msg.as_bytes() == b"X-Source: mailsuite\nReceived: x\nX-Spam: 1\nSubject: s\nX-Last: end\n\nbody\n"


def test_duplicate_rfc7352_and_mailbox_rfc5490():
    src = 'require ["duplicate", "fileinto", "mailbox"]; if duplicate { fileinto :create "Trash.Duplicate"; }'
    assert folders(run(src)) == ["INBOX"]
    out = run(src, host=Host(seen={"<1@acme>"}))
    assert [(d.mailbox, d.create) for d in out.deliveries] == [("Trash.Duplicate", True)]
    assert out.duplicates == [("", "<1@acme>", 7 * 86400)]
    assert folders(run('require ["mailbox", "fileinto"]; if mailboxexists "Junk" { fileinto "Junk"; }',
                       host=Host(folders=("Junk",)))) == ["Junk"]


def test_encoded_character_and_reject():
    out = run('require ["encoded-character", "fileinto"]; fileinto "${hex:41 42}${unicode:263a}";')
    assert folders(out) == ["AB\u263a"]
    out = run('require "reject"; reject text:\nNo thanks.\n.\n;')
    assert out.reject == "No thanks.\r\n" and out.deliveries == [] and not out.ereject
    out = run('require "ereject"; ereject "go away";')
    assert out.reject == "go away" and out.ereject
    # RFC 5429: reject with keep is an error; the message is kept
    out = run('require "reject"; keep; reject "x";')
    assert out.error and folders(out) == ["INBOX"]


def test_spamtest_and_virustest_read_our_own_results():
    ours = b"Authentication-Results: mail.example.com; spf=pass smtp.mailfrom=a; dmarc=fail header.from=b\n" + MSG
    theirs = b"Authentication-Results: evil.example; dmarc=fail\n" + MSG
    src = ('require ["spamtest", "relational", "comparator-i;ascii-numeric", "fileinto", "virustest"];'
           'if spamtest :value "ge" :comparator "i;ascii-numeric" "8" { fileinto "Junk"; }'
           'if virustest :value "eq" :comparator "i;ascii-numeric" "0" { addflag "x"; }')
    with pytest.raises(SieveSyntaxError):
        compile_script(src.encode())  # addflag without imap4flags
    src = src.replace('{ addflag "x"; }', '{ }')
    assert folders(run(src, ours)) == ["Junk"]
    assert folders(run(src, theirs)) == ["INBOX"]


def test_include_rfc6609_global_variables_and_limits():
    host = Host(scripts={
        "spam": b'require ["fileinto", "include", "variables"]; global "box"; fileinto "${box}"; return; keep;',
        "self": b'require "include"; include "self";',
    })
    out = run('require ["include", "variables"]; global "box"; set "box" "Junk"; include :once "spam";'
              'include :once "spam"; include :optional "missing";', host=host)
    assert folders(out) == ["Junk"]
    out = run('require "include"; include "self";', host=host)
    assert out.error and "deep" in out.error and folders(out) == ["INBOX"]
    out = run('require "include"; include "missing";', host=host)
    assert out.error and folders(out) == ["INBOX"]


def test_global_before_and_after_scripts():
    before = 'require "fileinto"; if header :contains "subject" "acme" { fileinto "Junk"; stop; }'
    out = run(before, MSG, "coyote@acme.example.com", "me@example.com", None,
              'require "fileinto"; fileinto "user";', 'require "fileinto"; fileinto "after";')
    assert folders(out) == ["Junk"]  # stop in "before" ends the whole run
    out = run('keep;', MSG, "coyote@acme.example.com", "me@example.com", None,
              'require "fileinto"; fileinto "user";')
    assert folders(out) == ["INBOX", "user"]


def test_runaway_limits():
    many = 'require "fileinto";' + "".join(f'fileinto "f{i}";' for i in range(40))
    out = run(many)
    assert out.error and "actions" in out.error and folders(out) == ["INBOX"]
    redirects = "".join(f'redirect "r{i}@example.org";' for i in range(6))
    assert "redirects" in (run(redirects).error or "")
    deep = "if true {" * 40 + "}" * 40
    with pytest.raises(SieveSyntaxError, match="nested"):
        compile_script(deep.encode())


@pytest.mark.parametrize("src, where", [
    ('if header :is "a" "b" { keep; ', (1, 31)),
    ('require "fileinto";\nfileinto "x"\nkeep;', (2, 1)),
    ('require "nosuch";', (1, 1)),
    ('keep;\nelse { keep; }', (2, 1)),
    ('if header :is "a" { keep; }', (1, 4)),
    ('vacation "x";', (1, 1)),
    ('if header :comparator "i;nosuch" "a" "b" {}', (1, 4)),
    ('"unterminated', (1, 1)),
])
def test_syntax_errors_say_where(src: str, where: tuple[int, int]):
    with pytest.raises(SieveSyntaxError) as info:
        compile_script(src.encode())
    assert (info.value.line, info.value.column) == where, str(info.value)
