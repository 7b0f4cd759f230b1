"""Schemathesis hooks for api/tests/api/auth/contract.rs: a fresh bearer
token for every test case, since some operations end the caller's own
sessions (logout, log out everywhere, role changes). The service's address
and the account come from the environment the test sets."""

import os

import requests
import schemathesis


@schemathesis.auth(refresh_interval=None)
class FreshToken:
    def get(self, case, ctx):
        response = requests.post(
            os.environ["API_BASE_URL"] + "/login",
            json={
                "username": os.environ["API_USERNAME"],
                "password": os.environ["API_PASSWORD"],
            },
            timeout=10,
        )
        response.raise_for_status()
        return response.json()["token"]

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"
