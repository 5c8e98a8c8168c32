"""Can a stopwatch tell who has an account? `make bench-timing` (or `python -m bench.timing`).

The login form and the reset form give the same answer whether or not an
account exists; if one case takes longer, the time tells instead. This runs
the blog under gunicorn with its production config (scrypt password hashes,
as production has them; one worker, so that nothing else shares its time) on
SQLite, with mail going to a local SMTP server, and prints the median time of:

1. a failed login: an existing username with a wrong password, against a
   username that has no account;
2. a password-reset request: an address with an account, against one without.

and the ratio of each pair (goal: 1.00, within the noise of a few percent).
The two kinds of request alternate, so that anything slowing the machine
down slows both. After each reset request the bench waits for the outbox to
send any mail, so that the mail of one request doesn't share the next one's time.

The figures are printed, not asserted: speed is measured here, not in tests.
Options: --rounds (requests of each kind, default 50).
"""

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from config import ProductionConfig
from tests.servers import (
    BIN,
    ROOT,
    Browser,
    env_settings,
    production_env,
    run_gunicorn,
    smtp_server,
)

# `flask seed` makes the user "demo" (demo@example.com) with a production hash.
EXISTING = {"username": "demo", "email": "demo@example.com"}
MISSING = {"username": "nobody-here", "email": "nobody-here@example.com"}
# Long enough for the outbox to wait its settle time and send a mail to the local server.
OUTBOX_PAUSE = 0.25  # seconds
WARM_UP = 3


def timed_post(browser: Browser, path: str, fields: dict) -> float:
    """POST the form at `path` (its CSRF token fetched first, untimed); return the POST's seconds.

    Fetching the form also shows, and so clears, the message the previous POST flashed,
    so the session cookie stays the same size from one request to the next.
    """
    token = browser.csrf_token(path)
    start = time.perf_counter()
    status, _, _ = browser.request(path, {"csrf_token": token, **fields})
    elapsed = time.perf_counter() - start
    assert status in (200, 302), f"{path} answered {status}"  # a 429 would measure the limiter
    return elapsed


def medians(rounds: int, measure) -> tuple[float, float]:
    """Median seconds of `measure(account)` for EXISTING and MISSING, alternating."""
    for _ in range(WARM_UP):
        measure(EXISTING)
        measure(MISSING)
    times: dict[str, list[float]] = {"existing": [], "missing": []}
    for _ in range(rounds):
        times["existing"].append(measure(EXISTING))
        times["missing"].append(measure(MISSING))
    return statistics.median(times["existing"]), statistics.median(times["missing"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50, help="requests of each kind")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, smtp_server("plain", Path(tmp)) as smtp:
        root = Path(tmp)
        env = production_env(
            root,
            f"sqlite:///{root / 'blog.sqlite'}",
            MAIL_DEFAULT_SENDER="blog@example.com",
            # Links on 127.0.0.1, where these requests are addressed: no BASE_URL needed.
            BASE_URL="",
            TRUSTED_HOSTS="",
            # Far above what the bench sends: a 429 page would measure the limiter instead.
            AUTH_RATE_LIMIT_PER_CLIENT="100000 per minute",
            AUTH_RATE_LIMIT_PER_ACCOUNT="100000 per minute",
            **env_settings(smtp.settings),
        )
        with run_gunicorn(env, root, workers=1) as server:
            demo_data = subprocess.run(
                [BIN / "flask", "seed", "--users", "2", "--posts", "0"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
            )
            assert demo_data.returncode == 0, demo_data.stdout + demo_data.stderr
            browser = Browser(server.url)

            def failed_login(account: dict) -> float:
                fields = {"username": account["username"], "password": "not-the-password"}
                return timed_post(browser, "/auth/login", fields)

            def reset_request(account: dict) -> float:
                seconds = timed_post(
                    browser, "/auth/reset_password_request", {"email": account["email"]}
                )
                time.sleep(OUTBOX_PAUSE)
                return seconds

            login = medians(args.rounds, failed_login)
            reset = medians(args.rounds, reset_request)
            mails = len(smtp.mailbox.messages)

    hash_method = ProductionConfig.PASSWORD_HASH_METHOD
    print(f"\nMedian of {args.rounds} requests of each kind, 1 gunicorn worker, {hash_method}")
    for number, title, (existing, missing) in (
        (1, "Failed login", login),
        (2, "Password-reset request", reset),
    ):
        print(f"\n{number}. {title}")
        print(f"   with an account         {existing * 1000:9.2f} ms")
        print(f"   without an account      {missing * 1000:9.2f} ms")
        print(f"   ratio (with / without)  {existing / missing:9.2f}   (goal: 1.00)")
    expected_mails = WARM_UP + args.rounds
    print(f"\n   reset mails delivered   {mails:9d}   (expected {expected_mails}: one per request")
    print("                                        for the address with an account)")


if __name__ == "__main__":
    main()
