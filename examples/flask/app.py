"""The example python tenant `make run` registers: a Flask app (Debian's python3-flask)."""

import os

from flask import Flask, request

app = Flask(__name__)


@app.route("/")
def index():
    return (f"hello from Flask in tenant {os.environ.get('TENANT')}, "
            f"worker {os.environ.get('TENANTFPM_WORKER_PID')}, uid {os.getuid()}\n")


@app.route("/echo", methods=["POST"])
def echo():
    return request.get_data()
