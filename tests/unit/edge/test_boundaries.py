"""An edge device must not need Faust: edge_agents never imports streams/ or Faust."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("streams", "faust", "aiokafka", "mode")


def test_importing_every_edge_module_loads_neither_streams_nor_faust():
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import edge_agents\n"
        "for m in pkgutil.walk_packages(edge_agents.__path__, 'edge_agents.'):\n"
        "    importlib.import_module(m.name)\n"
        "importlib.import_module('prism.commands.edge')\n"
        f"print(json.dumps(sorted(n for n in sys.modules if n.split('.')[0] in {FORBIDDEN!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
