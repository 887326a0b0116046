"""``torrentcore plugins [--json]``: the installed plugins, the strategies and storage backends they offer,
and their settings."""

from __future__ import annotations

import json

from ..errors import EXIT_OK


def cmd_plugins(args, pm) -> int:
    """``torrentcore plugins [--json]``: every installed plugin (state, kinds, distribution), what it offers."""
    from .. import plugins

    infos = plugins.plugin_infos(pm)
    offers = plugins.providers(pm)
    values = getattr(args, "plugin_settings", {})
    if args.json:
        print(json.dumps({"plugins": [i.as_json() for i in infos], "strategies": offers["strategy"],
                          "storages": offers["storage"], "settings": values}, indent=2, default=repr))
        return EXIT_OK
    for i in infos:
        origin = f"{i.dist} {i.version}" if i.dist else f"module {i.module}" + (f" {i.version}" if i.version else "")
        note = "  (load with -p " + i.name + ")" if i.state == "opt-in" else ""
        note += f"  ({i.error})" if i.error else ""
        print(f"plugin    {i.name:20} {i.state:9} {', '.join(i.kinds) or '-':28} {origin}{note}")
    for kind, label in (("strategy", "strategy"), ("storage", "storage ")):
        for name, owner in sorted(offers[kind].items()):
            print(f"{label}  {name:20} from {owner}")
    declared = plugins.declared_settings(pm)
    for ns in sorted(declared):
        for key, setting in sorted(declared[ns].items()):
            value = values.get(ns, {}).get(key, setting.default)
            print(f"setting   {ns + '.' + key:26} = {value!r:10} ({setting.type.__name__}, default "
                  f"{setting.default!r}) {setting.help}")
    return EXIT_OK

