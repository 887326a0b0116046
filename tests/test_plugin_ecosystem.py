"""Choosing plugins (-p, --no-plugin, opt-in entry points), listing them, their settings, and containment.

Third-party plugins here are modules written into ``tmp_path`` and, where an installed distribution is
needed, a ``.dist-info`` folder beside them (what pip leaves behind). Real downloads use a libtorrent
seeder on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pluggy
import pytest
import realpeers as rp
import structlog

from torrentcore import plugins
from torrentcore.errors import BadInputError, PluginError
from torrentcore.hookspec import hookimpl


def tc(*args: str, env: dict | None = None, cwd: str | os.PathLike | None = None, timeout: float = 60):
    """``torrentcore ARGS`` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "torrentcore", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL)


def one_error_line(out: subprocess.CompletedProcess) -> str:
    """The single stderr line of a refused command (exit 2, no traceback)."""
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("torrentcore: error: "), out.stderr
    return out.stderr.strip()


FANCY = textwrap.dedent(
    '''
    from torrentcore.hookspec import Setting, hookimpl

    class Backwards:
        def next_pieces(self, swarm, peer_has):
            return (i for i in reversed(range(swarm.num_pieces)) if swarm.wanted(i))

    @hookimpl
    def torrentcore_piece_strategies():
        return {"backwards": lambda torrent, options: Backwards()}

    @hookimpl
    def torrentcore_on_completed(torrent, snapshot):
        pass

    @hookimpl
    def torrentcore_plugin_settings():
        return {"fancy": {"depth": Setting(int, 2, "how deep")}}
    '''
)


@pytest.fixture
def installed(tmp_path):
    """Env for subprocesses where ``fancy`` is an installed opt-in plugin (group torrentcore.opt_in) of the
    distribution tc-fancy 2.5, and ``probe.py`` / ``noisy.py`` are importable modules."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "tc_fancy.py").write_text(FANCY)
    dist = site / "tc_fancy-2.5.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tc-fancy\nVersion: 2.5\n")
    (dist / "entry_points.txt").write_text("[torrentcore.opt_in]\nfancy = tc_fancy\n")
    (site / "probe.py").write_text(PROBE)
    (site / "noisy.py").write_text(NOISY)
    return dict(os.environ, PYTHONPATH=str(site) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                XDG_CONFIG_HOME=str(tmp_path / "xdg"), PROBE_OUT=str(tmp_path / "probe.json"))


def listing(env, *args) -> dict:
    out = tc("plugins", "--json", *args, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


# --- -p / --no-plugin / listing ---------------------------------------------------------------------


def test_opt_in_plugin_is_listed_and_loaded_only_with_p(installed):
    data = listing(installed)
    fancy = {p["name"]: p for p in data["plugins"]}["fancy"]
    assert fancy["state"] == "opt-in"
    assert (fancy["dist"], fancy["version"], fancy["kinds"]) == ("tc-fancy", "2.5", ["strategy", "reporter",
                                                                                      "options"])
    assert "backwards" not in data["strategies"] and "fancy" not in data["settings"]
    text = tc("plugins", env=installed).stdout
    assert "(load with -p fancy)" in text

    data = listing(installed, "-p", "fancy")
    fancy = {p["name"]: p for p in data["plugins"]}["fancy"]
    assert fancy["state"] == "loaded"
    assert data["strategies"]["backwards"] == "fancy"
    assert data["settings"]["fancy"] == {"depth": 2}
    # Disabling wins over -p; both spellings and pytest's -p no:NAME.
    for args in (["-p", "fancy", "--no-plugin", "fancy"], ["-p", "fancy", "-p", "no:fancy"],
                 ["-p", "fancy", "--disable", "fancy"]):
        data = listing(installed, *args)
        assert {p["name"]: p["state"] for p in data["plugins"]}["fancy"] == "disabled", args


def test_p_loads_a_module_by_import_name_and_lists_its_kinds(installed):
    data = listing(installed, "-p", "probe", "--plugin", "noisy")
    infos = {p["name"]: p for p in data["plugins"]}
    assert infos["probe"]["state"] == "loaded" and infos["probe"]["module"] == "probe"
    assert infos["probe"]["kinds"] == ["reporter", "options"]
    assert infos["noisy"]["kinds"] == ["strategy", "reporter"]
    assert infos["console"]["dist"] == "torrentcore" and infos["console"]["kinds"] == ["reporter", "options"]
    assert infos["filesystem"]["kinds"] == ["storage"]
    assert infos["rarest-first"]["kinds"][0] == "strategy"


def test_unknown_names_are_one_line_errors(installed):
    assert "cannot disable unknown plugin 'nope'" in one_error_line(tc("plugins", "--no-plugin", "nope",
                                                                       env=installed))
    line = one_error_line(tc("plugins", "-p", "no_such_module_xyz", env=installed))
    assert "cannot import plugin module 'no_such_module_xyz'" in line and "opt-in plugins: fancy" in line


def test_kinds_follow_the_hooks():
    assert plugins.kinds_of(["torrentcore_on_progress", "torrentcore_piece_strategies"]) == ["strategy", "reporter"]
    assert plugins.kinds_of(["torrentcore_storage_backends", "torrentcore_plugin_settings"]) == ["storage", "options"]
    assert plugins.kinds_of(["torrentcore_extensions", "torrentcore_add_options"]) == ["extension", "options"]
    assert plugins.kinds_of([]) == []


# --- settings ----------------------------------------------------------------------------------------

PROBE = textwrap.dedent(
    '''
    import json, os
    from torrentcore.hookspec import Setting, hookimpl

    @hookimpl
    def torrentcore_plugin_settings():
        return {"probe": {
            "count": Setting(int, 3, "how many"),
            "ratio": Setting(float, 0.5, "a share"),
            "loud": Setting(bool, False, "shout"),
            "mode": Setting(str, "fast", "how", choices=("fast", "slow")),
            "label": Setting(str, None, "a name"),
        }}

    @hookimpl
    def torrentcore_on_start(torrent, save_path, options):
        with open(os.environ["PROBE_OUT"], "w") as fh:
            json.dump(options.plugin_settings["probe"], fh)
    '''
)


def probe_module() -> types.ModuleType:
    """PROBE, the plugin the subprocess tests install, as a module of this process."""
    module = types.ModuleType("probe")
    exec(compile(PROBE, "probe.py", "exec"), module.__dict__)
    return module


@pytest.fixture
def pm():
    manager = plugins.get_plugin_manager()
    manager.register(probe_module(), name="probe")
    return manager


def test_settings_defaults_config_and_command_line(pm):
    values = plugins.resolve_settings(pm)
    assert values["probe"] == {"count": 3, "ratio": 0.5, "loud": False, "mode": "fast", "label": None}
    config = {"probe": {"count": "5", "loud": "yes", "label": "from config"}}  # INI gives strings
    values = plugins.resolve_settings(pm, ["probe.count=9", "probe.ratio=0.25", "probe.mode=slow"], config)
    assert values["probe"] == {"count": 9, "ratio": 0.25, "loud": True, "mode": "slow", "label": "from config"}
    toml_values = {"probe": {"count": 4, "ratio": 1, "loud": False}}  # TOML gives typed values; int fits float
    assert plugins.resolve_settings(pm, [], toml_values)["probe"]["ratio"] == 1.0
    assert plugins.resolve_settings(pm, ["probe.label=a=b"])["probe"]["label"] == "a=b"


@pytest.mark.parametrize(
    "opt, message",
    [
        ("nope.x=1", "--plugin-opt nope.x=1: unknown plugin 'nope' (plugins with settings: "),
        ("probe.cnt=1", "unknown setting probe.cnt (valid keys for probe: count, label, loud, mode, ratio)"),
        ("probe.count=many", "bad value for probe.count: 'many' is not an integer"),
        ("probe.ratio=half", "bad value for probe.ratio: 'half' is not a number"),
        ("probe.loud=perhaps", "bad value for probe.loud: 'perhaps' is not true or false"),
        ("probe.mode=medium", "bad value for probe.mode: 'medium' (choose from: fast, slow)"),
        ("probe.count", "invalid --plugin-opt 'probe.count' (expected NAME.KEY=VALUE"),
        ("count=1", "invalid --plugin-opt 'count=1' (expected NAME.KEY=VALUE"),
        ("console.x=1", "plugin 'console' has no settings"),
    ],
)
def test_bad_plugin_opts(pm, opt, message):
    with pytest.raises(BadInputError) as info:
        plugins.resolve_settings(pm, [opt])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_typed_toml_value(pm):
    with pytest.raises(BadInputError, match=r"bad value for probe.loud: 1 is not true or false"):
        plugins.resolve_settings(pm, [], {"probe": {"loud": 1}}, "config.toml")
    with pytest.raises(BadInputError, match=r"config.toml \[probe\]: unknown setting probe.size"):
        plugins.resolve_settings(pm, [], {"probe": {"size": 1}}, "config.toml")


def test_config_section_of_a_plugin_that_is_not_loaded_is_ignored():
    pm = plugins.get_plugin_manager(disabled=["console"])
    assert "console" not in plugins.resolve_settings(pm, [], {"console": {"anything": 1}})
    with pytest.raises(BadInputError, match="plugin 'console' is not loaded"):
        plugins.resolve_settings(pm, ["console.anything=1"])


def test_badly_declared_settings_name_the_plugin():
    class Bad:
        @hookimpl
        def torrentcore_plugin_settings(self):
            return {"bad": {"x": int}}

    pm = plugins.get_plugin_manager()
    pm.register(Bad(), name="bad-plugin")
    with pytest.raises(PluginError, match=r"plugin 'bad-plugin' declares setting bad.x badly"):
        plugins.resolve_settings(pm)


@pytest.fixture
def complete_data(tmp_path):
    """A torrent and its complete data: ``run --no-seed`` on it checks the data and stops (no network)."""
    root = rp.make_payload(str(tmp_path / "data"), 256 * 1024, seed="settings")
    torrent = str(tmp_path / "t.torrent")
    rp.make_torrent(root, [], piece_length=64 * 1024, out=torrent)
    return torrent, str(tmp_path / "data")


def _run_probe(installed, complete_data, *args):
    torrent, data = complete_data
    return tc("run", torrent, "-o", data, "--no-seed", "--quiet", "-p", "probe", *args, env=installed)


def test_settings_reach_the_plugin_through_options(installed, complete_data, tmp_path):
    xdg = tmp_path / "xdg" / "torrentcore"
    xdg.mkdir(parents=True)
    # The default config file (TOML) is read; --plugin-opt wins over it.
    (xdg / "config.toml").write_text('[probe]\ncount = 5\nlabel = "toml"\nloud = true\n')
    out = _run_probe(installed, complete_data, "--plugin-opt", "probe.count=8")
    assert out.returncode == 0, out.stderr
    seen = json.loads(Path(installed["PROBE_OUT"]).read_text())
    assert seen == {"count": 8, "ratio": 0.5, "loud": True, "mode": "fast", "label": "toml"}
    # An explicit INI file replaces the default one.
    ini = tmp_path / "my.ini"
    ini.write_text("[probe]\nratio = 0.75\nmode = slow\n\n[fancy]\ndepth = 3\n")  # fancy: installed, not loaded
    out = _run_probe(installed, complete_data, "--config", str(ini))
    assert out.returncode == 0, out.stderr
    seen = json.loads(Path(installed["PROBE_OUT"]).read_text())
    assert seen == {"count": 3, "ratio": 0.75, "loud": False, "mode": "slow", "label": None}


def test_config_file_errors_are_one_line_exit_2(installed, complete_data, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[probe\ncount = 1\n")
    assert f"config file {bad}: " in one_error_line(_run_probe(installed, complete_data, "--config", str(bad)))
    bad.write_text("count = 1\n")
    assert "'count' is outside a section" in one_error_line(_run_probe(installed, complete_data, "--config",
                                                                       str(bad)))
    bad.write_text("[probe]\ncount = 'x'\n")
    assert "bad value for probe.count: 'x' is not an integer" in one_error_line(
        _run_probe(installed, complete_data, "--config", str(bad)))
    ini = tmp_path / "bad.ini"
    ini.write_text("count = 1\n")
    assert f"config file {ini}: " in one_error_line(_run_probe(installed, complete_data, "--config", str(ini)))
    missing = tmp_path / "missing.toml"
    assert f"cannot read config file {missing}" in one_error_line(
        _run_probe(installed, complete_data, "--config", str(missing)))
    line = one_error_line(_run_probe(installed, complete_data, "--plugin-opt", "probe.colour=red"))
    assert line == ("torrentcore: error: --plugin-opt probe.colour=red: unknown setting probe.colour "
                    "(valid keys for probe: count, label, loud, mode, ratio)")


# --- containment --------------------------------------------------------------------------------------


class Recorder:
    def __init__(self, name: str, fail_on: str | None = None) -> None:
        self.name = name
        self.fail_on = fail_on
        self.calls: list[str] = []

    @hookimpl
    def torrentcore_on_piece_verified(self, torrent, index):
        self.calls.append(f"verified {index}")
        if self.fail_on == "verified":
            raise RuntimeError(f"{self.name} broke")

    @hookimpl
    def torrentcore_on_finish(self, torrent, snapshot, exit_code):
        self.calls.append("finish")


def test_a_raising_reporter_is_reported_once_and_unregistered():
    pm = pluggy.PluginManager("torrentcore")
    from torrentcore import hookspec

    pm.add_hookspecs(hookspec)
    good_before, bad, good_after = Recorder("a"), Recorder("bad", fail_on="verified"), Recorder("b")
    for name, plugin in (("a", good_before), ("bad", bad), ("b", good_after)):
        pm.register(plugin, name=name)
    hooks = plugins.ContainedHooks(pm)
    with structlog.testing.capture_logs() as logs:
        hooks.torrentcore_on_piece_verified(torrent=None, index=1)
        hooks.torrentcore_on_piece_verified(torrent=None, index=2)
        hooks.torrentcore_on_finish(torrent=None, snapshot=None, exit_code=0)
    assert bad.calls == ["verified 1"]
    assert good_before.calls == good_after.calls == ["verified 1", "verified 2", "finish"]
    assert hooks.disabled == ["bad"] and pm.get_plugin("bad") is None
    assert len(logs) == 1 and logs[0]["log_level"] == "warning"
    assert logs[0]["plugin"] == "bad" and "RuntimeError('bad broke')" in logs[0]["event"]
    # Hooks that are not reporters pass through untouched.
    assert hooks.torrentcore_piece_strategies is pm.hook.torrentcore_piece_strategies


def test_a_raising_hook_wrapper_is_blamed_and_unregistered():
    from torrentcore import hookspec

    class Wrapper:
        @hookimpl(wrapper=True)
        def torrentcore_on_piece_verified(self, torrent, index):
            yield
            raise ValueError("wrapper broke")

    pm = pluggy.PluginManager("torrentcore")
    pm.add_hookspecs(hookspec)
    good = Recorder("good")
    pm.register(good, name="good")
    pm.register(Wrapper(), name="wrapping")
    hooks = plugins.ContainedHooks(pm)
    with structlog.testing.capture_logs() as logs:
        hooks.torrentcore_on_piece_verified(torrent=None, index=1)
        hooks.torrentcore_on_piece_verified(torrent=None, index=2)
    assert hooks.disabled == ["wrapping"] and len(logs) == 1 and logs[0]["plugin"] == "wrapping"
    assert good.calls == ["verified 1", "verified 2"]


NOISY = textwrap.dedent(
    '''
    import os
    from torrentcore.hookspec import hookimpl

    CALLS = {"n": 0}

    class Flaky:
        """Fine for a few rounds, then raises: the engine must fall back to rarest-first."""
        def __init__(self):
            self.rounds = 0
        def next_pieces(self, swarm, peer_has):
            self.rounds += 1
            if self.rounds > 3:
                raise KeyError("flaky strategy gave up")
            return (i for i in range(swarm.num_pieces) if swarm.wanted(i))

    def _boom(torrent, options):
        raise RuntimeError("no strategy for you")

    def _not_a_strategy(torrent, options):
        return 42

    @hookimpl
    def torrentcore_piece_strategies():
        return {"flaky": lambda torrent, options: Flaky(), "boom": _boom, "bogus": _not_a_strategy}

    @hookimpl
    def torrentcore_on_progress(torrent, snapshot):
        CALLS["n"] += 1
        with open(os.environ["NOISY_OUT"], "a") as fh:
            fh.write("progress\\n")
        raise ZeroDivisionError("reporter bug")
    '''
)


def test_failing_factories_refuse_to_start(installed, complete_data, tmp_path):
    torrent, _ = complete_data
    out = tc("run", torrent, "-o", str(tmp_path / "dl"), "--no-seed", "-p", "noisy", "--strategy", "boom",
             env=installed)
    assert one_error_line(out) == ("torrentcore: error: piece strategy 'boom' (plugin 'noisy') failed to start: "
                                   "RuntimeError('no strategy for you')")
    out = tc("run", torrent, "-o", str(tmp_path / "dl"), "--no-seed", "-p", "noisy", "--strategy", "bogus",
             env=installed)
    assert "piece strategy 'bogus' (plugin 'noisy') did not return a strategy object (got int)" in one_error_line(out)


def test_storage_factory_failure_names_the_plugin(tmp_path):
    (tmp_path / "badstore.py").write_text(textwrap.dedent(
        '''
        from torrentcore.hookspec import hookimpl

        def _open(torrent, save_path, options):
            raise OSError("cannot reach the bucket")

        @hookimpl
        def torrentcore_storage_backends():
            return {"bucket": _open}
        '''
    ))
    root = rp.make_payload(str(tmp_path / "data"), 100_000, seed="store")
    torrent = str(tmp_path / "t.torrent")
    rp.make_torrent(root, [], piece_length=16 * 1024, out=torrent)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    out = tc("run", torrent, "-o", str(tmp_path / "dl"), "--no-seed", "-p", "badstore", "--storage", "bucket",
             env=env)
    assert one_error_line(out) == ("torrentcore: error: storage backend 'bucket' (plugin 'badstore') failed to "
                                   "start: OSError('cannot reach the bucket')")


def test_download_survives_a_raising_reporter_and_strategy(installed, tmp_path):
    root = rp.make_payload(str(tmp_path / "seed"), 4 * 1024 * 1024, seed="contain")
    torrent = str(tmp_path / "t.torrent")
    rp.make_torrent(root, [], piece_length=32 * 1024, out=torrent)  # 128 pieces
    env = dict(installed, NOISY_OUT=str(tmp_path / "noisy.txt"))
    with rp.LibtorrentPeer(name="seed", ignore_limits_on_local_network=False, upload_rate_limit=3_000_000) as s:
        s.add_torrent(torrent, os.path.dirname(root), seed=True)
        out = tc("run", torrent, "-o", str(tmp_path / "dl"), "--no-seed", "--port", str(rp.free_port()),
                 "--listen-host", rp.LOCALHOST, "--peer", f"{rp.LOCALHOST}:{s.port}", "-p", "noisy",
                 "--strategy", "flaky", "--log-format", "json", env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    rp.assert_same_tree(root, tmp_path / "dl" / "payload")
    logs = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    warnings = [entry["event"] for entry in logs if entry.get("level") == "warning"]
    reporter = [w for w in warnings if "reporter plugin 'noisy'" in w]
    assert reporter == ["reporter plugin 'noisy' raised ZeroDivisionError('reporter bug') in "
                        "torrentcore_on_progress; disabled for this run"], warnings
    strategy = [w for w in warnings if "piece strategy 'flaky'" in w]
    assert strategy == ["piece strategy 'flaky' (plugin 'noisy') raised KeyError('flaky strategy gave up'); "
                        "falling back to rarest-first"], warnings
    # The broken reporter was called once and never again; the console reporter kept going to the summary.
    assert (tmp_path / "noisy.txt").read_text() == "progress\n"
    assert "payload: done. 128/128 pieces" in out.stdout
