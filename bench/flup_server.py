"""flup's prefork FastCGI server for scenario 7: flup_server.py SOCKET WORKERS APP_DIR."""

from __future__ import annotations

import sys

from flup.server.fcgi_fork import WSGIServer


def main() -> None:
    sock, workers, app_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    sys.path.insert(0, app_dir)
    from wsgiapp import application  # the benchmark's app, from app_dir

    WSGIServer(application, bindAddress=sock, umask=0, minSpare=workers, maxSpare=workers,
               maxChildren=workers, maxRequests=0).run()


if __name__ == "__main__":
    main()
