"""Decoding throughput of each image decoder that works here (TorchCodec, torchvision, PIL), on one
CPU core and on CUDA.

python benchmarks/image_decoding.py --images 1024 --batch_size 128
python benchmarks/image_decoding.py --images 64 --repeats 1   (a quick check that it runs)

Writes ``--images`` generated 178x218 JPEGs (benchmarks/image_training.py's CelebA-like photos,
about 11 kB each) to a temporary folder, then for each decoder times, in images a second (the
median of ``--repeats`` passes after an untimed one; on the CPU images per second of CPU time):
- ``cpu decode``: the file's bytes (already in memory) to uint8 pixels, one image at a time on one
  thread, as one DataLoader worker decodes;
- ``cpu worker``: what one worker does per item: read the file, decode, CelebA's geometry (centre
  crop 178, resize 224);
- ``pil geometry``: the worker's item as the reference shapes it (PIL decodes, PIL resizes), for
  comparison with ``cpu worker``, which resizes uint8 tensors;
- on CUDA, for the decoders that decode there: ``cuda decode``, batches of ``--batch_size`` bytes to
  pixels on the GPU (nvJPEG), and ``cuda batch``, the same plus the geometry there, as
  ``XRM_IMAGE_DECODING=device`` does.
"""
import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without PYTHONPATH
from benchmarks.image_training import write_photo  # noqa: E402
from XRM.data.image_decoders import IMAGE_DECODERS, PREFERENCE, decoder_problem  # noqa: E402
from XRM.data.image_decoding import DeviceDecoder, FileBytes  # noqa: E402
from XRM.data.image_layouts import celeba_geometry  # noqa: E402
from XRM.data.images import ImageSplit, ImageSplitDataset  # noqa: E402


def images_per_second(run: Callable[[], None], count: int, repeats: int, device: torch.device) -> float:
    """``count`` over the median time of ``repeats`` calls of ``run``, after an untimed one: the
    process's CPU time on the CPU (what one core does, whatever else the machine runs), wall-clock
    time on CUDA."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time

    def timed() -> float:
        start = clock()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return clock() - start

    timed()
    return count / statistics.median(timed() for _ in range(repeats))


def cpu_rates(name: str, split: ImageSplit, encoded: list[torch.Tensor], repeats: int) -> dict[str, float]:
    """``cpu decode`` and ``cpu worker`` images a second of decoder ``name`` on one thread."""
    decoder = IMAGE_DECODERS[name]
    worker = ImageSplitDataset(split, as_bytes=True, decoder=decoder)
    cpu, count = torch.device("cpu"), len(encoded)
    return {"cpu decode": images_per_second(lambda: [decoder.decode(content) for content in encoded],
                                            count, repeats, cpu),
            "cpu worker": images_per_second(lambda: [worker[i] for i in range(count)], count, repeats, cpu)}


def pil_geometry_rate(split: ImageSplit, repeats: int) -> float:
    """Images a second of the reference's worker item: PIL decodes and applies the geometry."""
    from PIL import Image
    from torchvision import transforms

    reference = transforms.Compose([*split.geometry, transforms.PILToTensor()])

    def shape_all() -> None:
        for path in split.paths:
            with Image.open(path) as image:
                reference(image.convert("RGB"))

    return images_per_second(shape_all, len(split.paths), repeats, torch.device("cpu"))


def cuda_rates(name: str, split: ImageSplit, encoded: list[torch.Tensor], batch_size: int,
               repeats: int) -> dict[str, float]:
    """``cuda decode`` and ``cuda batch`` images a second of decoder ``name`` on the GPU."""
    decoder, device = IMAGE_DECODERS[name], torch.device("cuda")
    batches = [(encoded[start:start + batch_size], torch.arange(start, min(start + batch_size, len(encoded))))
               for start in range(0, len(encoded), batch_size)]
    on_device = DeviceDecoder(split, decoder)

    def decode_only() -> None:
        for contents, _ in batches:
            torch.cuda.current_stream(device).synchronize()  # as DeviceDecoder does (pytorch/vision#9606)
            decoder.decode_jpegs(contents, device)

    return {"cuda decode": images_per_second(decode_only, len(encoded), repeats, device),
            "cuda batch": images_per_second(lambda: [on_device(contents, index, device) for contents, index in batches],
                                            len(encoded), repeats, device)}


def main() -> None:
    """Parse the options, write the JPEGs, print each working decoder's rates."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024, help="how many generated JPEGs to decode")
    parser.add_argument("--batch_size", type=int, default=128, help="JPEGs a CUDA decode takes at once")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the median is reported")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one DataLoader worker's share of the CPU
    with tempfile.TemporaryDirectory() as folder:
        paths = [str(Path(folder) / f"{i:06d}.jpg") for i in range(args.images)]
        for seed, path in enumerate(paths):
            write_photo(Path(path), seed)
        split = ImageSplit(paths, np.zeros(len(paths)), np.zeros(len(paths)), celeba_geometry())
        encoded = [FileBytes(paths)[i][1] for i in range(len(paths))]
        print(f"{args.images} JPEGs of 178x218, torch {torch.__version__}"
              + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA"))
        for name in PREFERENCE:
            problem = decoder_problem(name)
            if problem is not None:
                print(f"{name:12s} not available ({problem})")
                continue
            rates = cpu_rates(name, split, encoded, args.repeats)
            if torch.cuda.is_available() and IMAGE_DECODERS[name].decode_jpegs is not None:
                rates |= cuda_rates(name, split, encoded, args.batch_size, args.repeats)
            print(f"{name:12s} " + ", ".join(f"{key} {rate:.0f}/s" for key, rate in rates.items()))
        print(f"{'reference':12s} pil geometry {pil_geometry_rate(split, args.repeats):.0f}/s")


if __name__ == "__main__":
    main()
