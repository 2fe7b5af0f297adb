"""The Chicago Face Database as distributed: ``CFD-{race}{gender}-{model}-{image}-{expression}.jpg``
(found anywhere below the root, e.g. ``CFD Version 3.0/Images/CFD/AF-200/CFD-AF-200-228-N.jpg``).

Expressions N (neutral), A (angry), F (fearful), HC and HO (happy, mouth closed / open); one pose. The
paper divides the 1,207 images at random into 1,081 training and 126 test images (here: drawn with
--seed; ``--test-subjects`` makes the split subject-disjoint instead). No AU labels: they come from
OpenFace.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from eet_lightning.data.prepare.common import Face, Options, PrepareError, Source, split_by_subjects

CFD_TEST_FRACTION = 126 / 1207
CFD_EXPRESSIONS: dict[str, str] = {
    "N": "neutral",
    "A": "angry",
    "F": "fearful",
    "HC": "happy",
    "HO": "happy",
}
_NAME = re.compile(r"^CFD-(?P<race>[A-Z]+)(?P<gender>[FM])-(?P<model>\d+)-(?P<image>\d+)-(?P<expr>[A-Z]+)$")


def parse_name(path: Path) -> dict[str, str]:
    m = _NAME.match(path.stem)
    if not m or m["expr"] not in CFD_EXPRESSIONS:
        raise PrepareError(
            f"{path}: not a CFD file name; expected CFD-{{race}}{{gender}}-{{model}}-{{image}}-{{expression}}.jpg "
            f"with expression in {sorted(CFD_EXPRESSIONS)}"
        )
    return m.groupdict()


def read(opts: Options) -> list[Source]:
    root = Path(opts.root)
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg") and p.name.startswith("CFD-")
    )
    if not files:
        raise PrepareError(f"no CFD images (CFD-*.jpg) under {root}")
    sources = []
    for path in files:
        f = parse_name(path)
        subject = f"{f['race']}{f['gender']}-{f['model']}"
        face = Face(key=f"{subject}/{path.stem}", subject=subject, emotion=CFD_EXPRESSIONS[f["expr"]])
        sources.append(Source(path, "image", [face]))
    faces = [f for s in sources for f in s.faces]
    if opts.test_subjects:
        split_by_subjects(faces, opts.test_subjects, "CFD")
        return sources
    n_test = max(2, round(len(faces) * CFD_TEST_FRACTION))
    if len(faces) - n_test < 2:
        raise PrepareError(f"CFD: {len(faces)} image(s) under {root}; a split needs at least 4")
    order = np.random.default_rng(opts.seed).permutation(len(faces)).tolist()
    test = set(order[:n_test])
    # held-out pairs need two people: extend the draw until the test images hold a second subject
    for k in order[n_test:]:
        if len({faces[t].subject for t in test}) >= 2:
            break
        test.add(k)
    for k, face in enumerate(faces):
        face.split = "test" if k in test else "train"
    return sources
