#!/usr/bin/env python
"""Write V-JEPA 2 manifests ('path label' per line) for examples/k400_probe.py.

    python examples/build_manifest.py folder /data/k400/train k400/train.csv
    python examples/build_manifest.py annotations kinetics400/validate.csv /data/k400/val k400/val.csv \
        --classes k400/train_classes.txt

A thin wrapper around `python -m hf_vjepa_area.data.manifest` (see --help). Labels index the sorted class
names; the class list lands beside the manifest (`train_classes.txt`), which k400_probe.py reads for
class names. Build val with `--classes` pointing at the train list so labels agree. `folder` also lists
folders of frames (`<class_name>/<video>/*.jpg|jpeg|png`, Jester's layout) as videos.
"""

import sys
from pathlib import Path

try:
    import hf_vjepa_area  # noqa: F401
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_vjepa_area.data.manifest import main

if __name__ == "__main__":
    raise SystemExit(main())
