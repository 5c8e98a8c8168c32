#!/bin/sh
# The container's first process (the Dockerfile's ENTRYPOINT): bring the
# database schema up to date, then become gunicorn.
#
# - set -e: a failed migration stops the container here, with the migration's
#   error in its log (`docker compose logs app`), instead of serving pages from
#   a schema the code doesn't match. set -u: a misspelt variable is an error too.
# - exec: gunicorn takes this shell's place as PID 1, so the SIGTERM of
#   `docker stop` reaches gunicorn's master, which lets the workers finish
#   their requests and send their queued error mails (graceful_timeout in
#   gunicorn.conf.py), then exits 0. Without exec, sh would stay PID 1 and
#   ignore the signal, and Docker would kill everything when its wait ran out.
# - With arguments, it runs them instead, the same way and without migrating:
#   `docker compose run --rm app flask db current`.
set -eu

# gunicorn.conf.py and blog.py are found from the project's folder, wherever
# the script is started from (the image's WORKDIR, or a checkout).
cd "$(dirname "$0")/.."
# .flaskenv says the same, but only to a `flask` that finds that file.
export FLASK_APP=blog.py

if [ "$#" -gt 0 ]; then
    exec "$@"
fi

echo "docker-entrypoint: flask db upgrade"
flask db upgrade
echo "docker-entrypoint: exec gunicorn"
exec gunicorn -c gunicorn.conf.py blog:app
