"""Where a page's time goes: `make profile` (or `.venv/bin/python -m bench.profile`).

Fills a temporary SQLite database at the benchmark's size (bench/pages.py:
1,000 users, 50,000 posts, 50 follows each), logs in as the demo user with
Flask's test client, and runs each hot page a few hundred times under
pyinstrument, a sampling profiler: it looks at the call stack every 0.2 ms and
prints the tree of calls that the samples landed in, with their seconds. No
gunicorn and no network here: what is left is the app's own work, the part
that code changes can speed up.

Flags: --page PATH (repeatable; default: the index, explore and a profile),
--requests N per page (default 300), --html to write pyinstrument's HTML
reports into test-artifacts/ instead of printing text.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

from pyinstrument import Profiler

from app import create_app
from app.commands import DEMO_PASSWORD, seed_database
from app.extensions import db
from bench.pages import FOLLOWS, POSTS, PROFILE_USER, USERS
from config import TestingConfig

ROOT = Path(__file__).resolve().parent.parent

PAGES = ["/", "/explore", f"/user/{PROFILE_USER}"]
SAMPLE_INTERVAL = 0.0002  # seconds


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page", action="append", dest="pages", help="a path to profile")
    parser.add_argument("--requests", type=int, default=300, help="requests per page (300)")
    parser.add_argument("--html", action="store_true", help="HTML reports in test-artifacts/")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        # The testing config with a file database: it logs nowhere, needs no
        # CSRF token to log in, and doesn't rate-limit a few hundred requests.
        config = type(
            "ProfileConfig",
            (TestingConfig,),
            {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp}/blog.sqlite", "RATELIMIT_ENABLED": False},
        )
        app = create_app(config)
        with app.app_context():
            db.create_all()
            seed_database(USERS, POSTS, FOLLOWS, seed=2018)
        client = app.test_client()
        client.post("/auth/login", data={"username": "demo", "password": DEMO_PASSWORD})
        for path in args.pages or PAGES:
            for _ in range(20):  # templates compiled, connections open: not the page's cost
                assert client.get(path).status_code == 200, path
            profiler = Profiler(interval=SAMPLE_INTERVAL)
            with profiler:
                for _ in range(args.requests):
                    client.get(path)
            per_request = profiler.last_session.duration / args.requests * 1000
            print(f"\n=== {path}: {per_request:.1f} ms a request (with the profiler's overhead)")
            if args.html:
                folder = ROOT / "test-artifacts"
                folder.mkdir(exist_ok=True)
                report = folder / f"profile{path.replace('/', '_') or '_index'}.html"
                report.write_text(profiler.output_html())
                print(f"    report: {os.path.relpath(report)}")
            else:
                print(profiler.output_text(color=False, short_mode=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
