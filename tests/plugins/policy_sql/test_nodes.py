"""Two relay nodes sharing one database: a change made on one reaches the other within a second,
although the other answers from its cache."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from tests.cli import REPO


NODE = textwrap.dedent(
    """
    import sys, time
    from sealrelay.core.bus import MessageBus
    from sealrelay.core.config import load_config
    from sealrelay.core.envelope import Envelope
    from sealrelay.core.plugins import load_plugins
    from sealrelay.plugins import BUILTIN_PLUGINS

    config = load_config(sys.argv[1])
    envelope = Envelope(sender="alice@example.org", recipients=("bob@partner.example",))
    plugins = load_plugins(config, builtins=BUILTIN_PLUGINS, entry_points=False)
    with MessageBus(plugins, config) as bus:
        def sign():
            return bus.resolve_policy(envelope.sender, envelope.recipients[0], envelope).sign
        first = sign()
        print("ready", first, flush=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            now = sign()
            if now != first:
                print("changed", now, time.time(), flush=True)
                break
            time.sleep(0.005)
        else:
            print("never changed", flush=True)
    """
)


def write_config(backend, config) -> str:
    path = backend.tmp_path / "node.toml"
    path.write_text(
        f'[storage]\nurl = "{backend.url}"\ndata_dir = "{config.data_dir}"\n'
        f'[security]\nmaster_key_file = "{config.resolve(config.security.master_key_file)}"\n'
    )
    return str(path)


@pytest.mark.parametrize("change", ["add", "remove"])
def test_a_change_on_one_node_reaches_another_within_a_second(admin, backend, config, change):
    if change == "remove":
        rule = admin("policy add", sender="*", recipient="*@partner.example", sign="opaque").data
    with subprocess.Popen(
        [sys.executable, "-c", NODE, write_config(backend, config)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    ) as node:
        assert node.stdout is not None
        try:
            ready = node.stdout.readline().split()
            assert ready == ["ready", "opaque" if change == "remove" else "clear"]
            time.sleep(1.2)  # the other node has cached the answer and polled since
            if change == "add":
                admin("policy add", sender="*", recipient="*@partner.example", sign="opaque")
            else:
                admin("policy remove", id=rule["id"])
            committed = time.time()
            word, sign, seen = node.stdout.readline().split()
            assert (word, sign) == ("changed", "clear" if change == "remove" else "opaque")
            assert float(seen) - committed < 1.0
        finally:
            node.kill()
