"""Run a Load -> Filter -> Save flow once per (image, filter) pair with a ``BatchFlow``.

The "images" are small 2D lists of grey levels (0-255) and the filters are pure
Python. ``ImageBatch.prep`` returns one param dict per (image, filter) pair; each
run's params are that dict merged over the flow's own params
(``flow.set_params({"quality": 90, "threshold": 128})``), so a param set can also
override a flow-wide default (the ``gradient`` image is saved at quality 50).

Run it from the repository root or from this folder::

    python cookbook/batch-flow/main.py
"""

from __future__ import annotations

from typing import Any

from pocketbatch import BatchFlow, Node

Image = list[list[int]]

IMAGES: dict[str, dict[str, Any]] = {
    "checker": {"pixels": [[0, 255, 0, 255], [255, 0, 255, 0]] * 2},
    "gradient": {
        "pixels": [[16 * r + 64 * c for c in range(4)] for r in range(4)],
        "quality": 50,  # overrides the flow's quality for this image's runs
    },
    "spot": {
        "pixels": [[20, 20, 20, 20], [20, 200, 200, 20], [20, 200, 200, 20], [20, 20, 20, 20]]
    },
}
FILTERS = ("invert", "blur", "threshold")
FLOW_PARAMS = {"quality": 90, "threshold": 128}


# -- pure-Python image operations -------------------------------------------------


def invert(img: Image) -> Image:
    return [[255 - v for v in row] for row in img]


def blur(img: Image) -> Image:
    """3x3 box blur; the window is clipped at the edges."""
    h, w = len(img), len(img[0])
    out = []
    for r in range(h):
        row = []
        for c in range(w):
            window = [
                img[rr][cc]
                for rr in range(max(r - 1, 0), min(r + 2, h))
                for cc in range(max(c - 1, 0), min(c + 2, w))
            ]
            row.append(sum(window) // len(window))
        out.append(row)
    return out


def threshold(img: Image, level: int) -> Image:
    return [[255 if v >= level else 0 for v in row] for row in img]


def quantize(img: Image, quality: int) -> Image:
    """Fake lossy "compression": lower quality keeps fewer grey levels."""
    step = 1 + (100 - quality) // 10
    return [[v - v % step for v in row] for row in img]


# -- the sub-flow: Load -> Filter -> Save ----------------------------------------------


def key(params: dict[str, Any]) -> tuple[str, str]:
    return (params["image"], params["filter"])


class Load(Node):
    def prep(self, shared: dict[str, Any]) -> Image:
        return shared["images"][self.params["image"]]["pixels"]

    def exec(self, pixels: Image) -> Image:
        return [row[:] for row in pixels]  # work on a copy, never on the original

    def post(self, shared: dict[str, Any], pixels: Image, copy: Image) -> None:
        # Scratch space keyed by the run's params, so runs never see each other's data.
        shared["work"][key(self.params)] = copy


class Filter(Node):
    def prep(self, shared: dict[str, Any]) -> tuple[Image, str, int]:
        return shared["work"][key(self.params)], self.params["filter"], self.params["threshold"]

    def exec(self, job: tuple[Image, str, int]) -> Image:
        img, name, level = job
        if name == "invert":
            return invert(img)
        if name == "blur":
            return blur(img)
        if name == "threshold":
            return threshold(img, level)
        raise ValueError(f"unknown filter {name!r}")

    def post(self, shared: dict[str, Any], job: object, filtered: Image) -> None:
        shared["work"][key(self.params)] = filtered


class Save(Node):
    def prep(self, shared: dict[str, Any]) -> tuple[Image, int]:
        return shared["work"].pop(key(self.params)), self.params["quality"]

    def exec(self, job: tuple[Image, int]) -> Image:
        img, quality = job
        return quantize(img, quality)

    def post(self, shared: dict[str, Any], job: object, saved: Image) -> None:
        flat = [v for row in saved for v in row]
        shared["outputs"][key(self.params)] = {
            "pixels": saved,
            "params": dict(self.params),  # what this run saw: flow params + its param set
            "quality": self.params["quality"],
            "min": min(flat),
            "max": max(flat),
            "mean": sum(flat) / len(flat),
            "checksum": sum(flat),
        }


class ImageBatch(BatchFlow):
    """One sub-flow run per (image, filter) pair."""

    def prep(self, shared: dict[str, Any]) -> list[dict[str, Any]]:
        param_sets = []
        for image, spec in shared["images"].items():
            for name in shared["filters"]:
                params: dict[str, Any] = {"image": image, "filter": name}
                if "quality" in spec:
                    params["quality"] = spec["quality"]
                param_sets.append(params)
        return param_sets

    def post(self, shared: dict[str, Any], param_sets: list[dict[str, Any]], _: None) -> None:
        shared["runs"] = len(param_sets)


def build_flow() -> ImageBatch:
    load = Load(name="load")
    load >> Filter(name="filter") >> Save(name="save")
    flow = ImageBatch(start=load, name="images x filters")
    flow.set_params(dict(FLOW_PARAMS))
    return flow


def main() -> dict[str, Any]:
    """Run every (image, filter) pair; return ``shared`` with ``outputs`` filled in."""
    flow = build_flow()
    flow.validate()
    shared: dict[str, Any] = {
        "images": IMAGES,
        "filters": list(FILTERS),
        "work": {},
        "outputs": {},
    }
    flow.run(shared)
    return shared


def report(shared: dict[str, Any]) -> None:
    print(f"Flow params: {FLOW_PARAMS}; {shared['runs']} runs of load -> filter -> save")
    print()
    print(
        f"{'image':<9} {'filter':<10} {'quality':>7} {'min':>4} {'max':>4} {'mean':>7} {'checksum':>8}"
    )
    for (image, name), out in shared["outputs"].items():
        print(
            f"{image:<9} {name:<10} {out['quality']:>7} {out['min']:>4} {out['max']:>4}"
            f" {out['mean']:>7.2f} {out['checksum']:>8}"
        )
    print()
    print("Params seen by the save step:")
    for pair in [("checker", "invert"), ("gradient", "blur")]:
        print(f"  {pair}: {shared['outputs'][pair]['params']}")
    print()
    print("spot x blur, saved at quality 90:")
    for row in shared["outputs"][("spot", "blur")]["pixels"]:
        print("  " + " ".join(f"{v:>3}" for v in row))


if __name__ == "__main__":
    report(main())
