# The blog's image: gunicorn serving blog:app, the schema brought up to date
# at every start (deploy/docker-entrypoint.sh). compose.yaml runs it with
# PostgreSQL and Redis: `docker compose up --build` (README, "Containers").
# tests/test_containers.py checks this file against the app and compose.yaml.

# A patch release, not a moving tag: a rebuild gets the same Python until
# someone raises it on purpose (the app supports Python 3.11 and later).
FROM python:3.12.12-slim-bookworm

# The app's own user. It owns only the folders it writes (below): the code
# stays root's, so a hole in the app can't rewrite it.
RUN groupadd --system blog && useradd --system --gid blog --no-create-home blog

WORKDIR /app

# The requirements alone first, in a layer of their own: the slow install is
# redone only when requirements.txt changes, not at every change of the code.
# Every pinned package has a wheel for this Python, so no compiler is needed.
COPY requirements.txt .
RUN pip install --no-cache-dir --root-user-action=ignore -r requirements.txt

COPY . .
# - The Chinese pages' catalogue, compiled from its .po (.dockerignore leaves
#   the checked-in .mo out, so the image's always matches the .po): pybabel
#   itself, not `flask translate compile`, which would start the production
#   app and so need a SECRET_KEY at build time.
# - The bytecode, now: the app's user can't write __pycache__ into /app, and
#   every start would otherwise compile the app, its migrations and
#   gunicorn.conf.py again.
# - logs/ is LOG_DIR (compose.yaml mounts a volume there): the log file, and
#   the SQLite files of storm control and the rate limits when there is no
#   Redis. instance/ holds the SQLite database when DATABASE_URL is unset.
RUN pybabel compile -d app/translations \
    && python -m compileall -q app migrations blog.py config.py gunicorn.conf.py \
    && mkdir -p logs instance \
    && chown blog:blog logs instance

# Production settings, logging to stdout (`docker logs`), listening on every
# address of the container: gunicorn.conf.py's default, 127.0.0.1, would be
# unreachable from outside it. Everything else comes from the environment at
# run time (compose.yaml, .env): never bake a secret into an image.
ENV FLASK_CONFIG=production \
    LOG_TO_STDOUT=1 \
    GUNICORN_BIND=0.0.0.0:8000
EXPOSE 8000

USER blog

# /healthz answers 200 while the app and its database work (app/main/routes.py).
# Slim images have no curl: Python's urllib asks, on GUNICORN_BIND's port, and
# with TRUSTED_HOSTS set it names the first of them, or Flask would answer 400.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as http; \
    port = os.environ['GUNICORN_BIND'].rpartition(':')[2]; \
    host = os.environ.get('TRUSTED_HOSTS', '').split(',')[0].strip().lstrip('.'); \
    http.urlopen(http.Request(f'http://127.0.0.1:{port}/healthz', headers={'Host': host} if host else {}), timeout=4)"]

ENTRYPOINT ["/app/deploy/docker-entrypoint.sh"]
