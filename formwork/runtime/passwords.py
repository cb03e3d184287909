"""The password policy, one for the API, the pages and the command line.

A password must be at least ``MIN_LENGTH`` characters, must not be the username (in any case, nor the
username with a few digits after it), and must not be one of the passwords every attacker tries first (a
small built-in list: nothing is downloaded). :func:`problem` answers a code the pages translate;
:func:`check` raises the API's validation error in English.
"""

from __future__ import annotations

from typing import Any

from formwork.errors import ValidationFailed

MIN_LENGTH = 8
MAX_LENGTH = 1024

#: the most used passwords of at least MIN_LENGTH characters (from public breach statistics), lower-cased
COMMON = frozenset("""
password password1 password12 password123 password1234 passw0rd p@ssw0rd p@ssword pa$$word passwort
12345678 123456789 1234567890 12345678910 0123456789 87654321 987654321 11111111 00000000 88888888 66666666
12341234 11223344 123123123 147258369 159753456 123qweasd 1q2w3e4r 1q2w3e4r5t 1qaz2wsx 1qazxsw2 zaq12wsx
qwertyui qwertyuiop qwerty123 qwerty12 qwerty1234 asdfghjk asdfghjkl zxcvbnm1 zxcvbnm123 qazwsxedc
abc12345 abcd1234 abcdefgh a1b2c3d4 aa123456 abc123456 iloveyou iloveyou1 sunshine princess1 football
football1 baseball welcome1 welcome123 letmein1 letmein123 trustno1 superman batman123 starwars dragon123
monkey123 master123 shadow123 michael1 jennifer computer internet whatever mustang1 charlie1 freedom1
admin123 admin1234 administrator adminadmin root1234 changeme changeme123 default1 secret123 test1234
testtest test12345 guest123 user1234 login123 passpass woaini1314 woaini520 5201314520 1314520520
aini1314 zhang123 wang1234 q1w2e3r4 q1w2e3r4t5 1234qwer qwer1234 asdf1234 zxcv1234 11112222 12344321
""".split())


def problem(password: Any, username: str | None = None) -> str | None:
    """Why ``password`` is refused, as a code (``too_short``, ``too_long``, ``username``, ``common``), or None."""
    if not isinstance(password, str) or len(password) < MIN_LENGTH:
        return "too_short"
    if len(password) > MAX_LENGTH:
        return "too_long"
    low = password.lower()
    if username and isinstance(username, str):
        name = username.strip().lower()
        if name and (low == name or low.rstrip("0123456789!.-_ ") == name or low == name[::-1]):
            return "username"
    if low in COMMON or len(set(low)) <= 2:
        return "common"
    return None


MESSAGES = {
    "too_short": f"must be at least {MIN_LENGTH} characters",
    "too_long": f"must be at most {MAX_LENGTH} characters",
    "username": "must not be the username",
    "common": "is one of the most common passwords: choose another",
}


def check(password: Any, username: str | None = None, field: str = "password") -> None:
    """Raise a 422 naming ``field`` when the password breaks the policy."""
    code = problem(password, username)
    if code is not None:
        raise ValidationFailed.from_details({field: [MESSAGES[code]]})
