"""Frames of the packaged sample boards, as the simulator camera sends them unstamped: the board's JPEG with
its defect-free template as the reference."""

from __future__ import annotations

import shutil
from pathlib import Path

from lineguard.contracts import new_inspection_id
from lineguard.samples import SAMPLE_BOARDS
from lineguard.v1.common_pb2 import Part
from lineguard.v1.frame_pb2 import Frame

BOARD_STEMS: tuple[str, ...] = tuple(sorted(p.name.removesuffix("_test.jpg") for p in SAMPLE_BOARDS.glob("*_test.jpg")))


def board_bytes(stem: str = "00041000") -> bytes:
    return (SAMPLE_BOARDS / f"{stem}_test.jpg").read_bytes()


def template_bytes(stem: str = "00041000") -> bytes:
    return (SAMPLE_BOARDS / f"{stem}_temp.jpg").read_bytes()


def board_frame(
    seq: int,
    stem: str = "00041000",
    *,
    data: bytes | None = None,
    reference: bytes | None = None,
    recipe: str = "pcb-a",
    px_per_mm: float = 48.0,
) -> Frame:
    """Board `stem` as part `seq` of line l1, station s1 (the demo config's); `data` replaces the image bytes
    (a bad frame), `reference` the template (b"" for none)."""
    part = Part(inspection_id=new_inspection_id(), line="l1", station="s1", recipe_id=recipe, sequence=seq)
    reference = template_bytes(stem) if reference is None else reference
    return Frame(
        part=part,
        encoding="jpeg",
        data=board_bytes(stem) if data is None else data,
        width=640,
        height=640,
        px_per_mm=px_per_mm,
        reference_data=reference,
        reference_encoding="jpeg" if reference else "",
    )


def deeppcb_layout(dst: Path) -> Path:
    """The sample boards laid out under dst as DeepPCB publishes them (groupG/G/<stem>_{test,temp}.jpg,
    groupG/G_not/<stem>.txt, trainval.txt), for `lineguard data import-deeppcb`."""
    lines = []
    for annotation in sorted(SAMPLE_BOARDS.glob("*.txt")):
        stem, group = annotation.stem, annotation.stem[:5]
        images, labels = dst / f"group{group}" / group, dst / f"group{group}" / f"{group}_not"
        images.mkdir(parents=True, exist_ok=True)
        labels.mkdir(parents=True, exist_ok=True)
        for suffix in ("_test.jpg", "_temp.jpg"):
            shutil.copyfile(SAMPLE_BOARDS / f"{stem}{suffix}", images / f"{stem}{suffix}")
        shutil.copyfile(annotation, labels / annotation.name)
        lines.append(f"group{group}/{group}/{stem}.jpg group{group}/{group}_not/{stem}.txt")
    (dst / "trainval.txt").write_text("\n".join(lines))
    return dst


def write_model_input(stem: str, kind: str, dst_dir: Path, *, paired: bool) -> Path:
    """Sample board `stem` as a dataset stores it: kind "test" the board with defects, "temp" its good part.
    For a plain model the published JPEG; for a paired model the PNG `import-deeppcb --paired` writes."""
    from lineguard.modelops.deeppcb import DeepPCBPair, write_paired

    dst_dir.mkdir(parents=True, exist_ok=True)
    if not paired:
        return Path(shutil.copyfile(SAMPLE_BOARDS / f"{stem}_{kind}.jpg", dst_dir / f"{stem}_{kind}.jpg"))
    pair = DeepPCBPair(
        group=f"group{stem[:5]}",
        stem=stem,
        test_image=SAMPLE_BOARDS / f"{stem}_test.jpg",
        template_image=SAMPLE_BOARDS / f"{stem}_temp.jpg",
        annotation=SAMPLE_BOARDS / f"{stem}.txt",
    )
    write_paired(pair, dst_dir, good=kind == "temp")
    return dst_dir / f"{stem}_{kind}.png"


def sample_split(root: Path, *, paired: bool) -> Path:
    """The sample boards as a labelled YOLO val split under `root`, in a model's input form: each board with its
    boxes, each board's good part (its template's entry) with an empty label file; returns its data.yaml."""
    import cv2

    from lineguard.deeppcb_format import DEEPPCB_CLASSES
    from lineguard.modelops.deeppcb import yolo_label_lines

    images, labels = root / "images" / "val", root / "labels" / "val"
    labels.mkdir(parents=True, exist_ok=True)
    for annotation in sorted(SAMPLE_BOARDS.glob("*.txt")):
        for kind in ("test", "temp"):
            write_model_input(annotation.stem, kind, images, paired=paired)
        board = cv2.imread(str(SAMPLE_BOARDS / f"{annotation.stem}_test.jpg"), cv2.IMREAD_GRAYSCALE)
        assert board is not None, annotation
        height, width = board.shape
        (labels / f"{annotation.stem}_test.txt").write_text(
            "".join(f"{line}\n" for line in yolo_label_lines(annotation, width, height))
        )
        (labels / f"{annotation.stem}_temp.txt").write_text("")
    names = "".join(f"  {i}: {name}\n" for i, name in enumerate(DEEPPCB_CLASSES))
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/val\nval: images/val\nnames:\n{names}")
    return root / "data.yaml"
