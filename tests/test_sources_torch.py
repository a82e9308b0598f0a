"""PyTorch datasets and loaders: exact uint8 statistics, explicit CHW/HWC, bad items by index."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import normlab
from normlab.errors import ShapeError, SourceError
from normlab.sources import resolve

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset  # noqa: E402


def chw(n=30, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 5, 4), dtype=np.uint8)


def test_map_dataset_chw_uint8_is_exact():
    x = chw()
    ds = TensorDataset(torch.from_numpy(x), torch.arange(len(x)))  # (image, label) samples
    m = normlab.compute_stats(ds, "channel", channel_axis=0)
    ref = np.moveaxis(x, 1, -1).reshape(-1, 3)
    assert m.exact and m.value_scale["dtype"] == "uint8"
    s1 = ref.astype(np.int64).sum(axis=0)
    assert [float(v) for v in m.mean] == [int(v) / ref.shape[0] for v in s1]
    np.testing.assert_allclose(m.var(), ref.astype(np.float64).var(axis=0), rtol=1e-12)


def test_channel_axis_must_be_explicit_for_torch():
    ds = TensorDataset(torch.from_numpy(chw()))
    with pytest.raises(ShapeError, match="channel_axis=0"):
        normlab.compute_stats(ds, "channel")
    hwc = normlab.compute_stats(ds, "channel", channel_axis=-1)  # HWC on purpose: 4 "channels"
    assert hwc.reduced_shape == (4,)
    assert normlab.compute_stats(ds, "global").reduced_shape == ()


def test_dataloader_batches_match_dataset_and_array():
    x = chw(37)
    ds = TensorDataset(torch.from_numpy(x), torch.zeros(37))
    loader = DataLoader(ds, batch_size=8)
    a = normlab.compute_stats(loader, "channel", channel_axis=0)
    b = normlab.compute_stats(ds, "channel", channel_axis=0, chunk_size=5)
    c = normlab.compute_stats(x, "channel", channel_axis=0)
    np.testing.assert_array_equal(a.mean, c.mean)
    np.testing.assert_array_equal(b.var(), c.var())


class Squares(IterableDataset):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        for i in range(self.n):
            yield torch.full((2, 2), float(i), dtype=torch.float64), i


def test_iterable_dataset_float():
    m = normlab.compute_stats(Squares(10), "global")
    assert float(m.mean) == 4.5
    assert float(m.var()) == np.arange(10.0).var()


class Ragged(Dataset):
    def __init__(self, bad_index, shape=(3, 4, 4), failing=False):
        self.bad_index, self.shape, self.failing = bad_index, shape, failing

    def __len__(self):
        return 12

    def __getitem__(self, i):
        if i == self.bad_index:
            if self.failing:
                raise OSError(f"disk error reading sample {i}")
            return torch.zeros(3, 5, 4, dtype=torch.uint8)
        return torch.full(self.shape, i, dtype=torch.uint8)


def test_inconsistent_shapes_name_the_index():
    with pytest.raises(ShapeError, match=r"dataset\[0\] is 3x4x4, dataset\[7\] is 3x5x4"):
        normlab.compute_stats(Ragged(7))
    m = normlab.compute_stats(Ragged(7), "channel", channel_axis=0)  # channels agree: fine
    assert m.n_samples_seen == 12


def test_inconsistent_dtypes_name_the_index():
    class Mixed(Ragged):
        def __getitem__(self, i):
            return torch.zeros(2, 2, dtype=torch.float32 if i == 5 else torch.uint8)

    with pytest.raises(
        SourceError, match=r"dataset\[0\] is 2-d uint8, dataset\[5\] is 2-d float32"
    ):
        normlab.compute_stats(Mixed(None), "global")


def test_failing_item_named_or_skipped(tmp_path):
    with pytest.raises(SourceError, match=r"dataset\[4\].*disk error"):
        normlab.compute_stats(Ragged(4, failing=True))
    m = normlab.compute_stats(Ragged(4, failing=True), skip_bad=True)
    assert m.n_samples_seen == 11 and m.n_skipped == 1 and m.skipped[0]["item"] == "dataset[4]"
    m.save(tmp_path / "s.safetensors")
    assert normlab.load(tmp_path / "s.safetensors").n_skipped == 1


def test_dict_samples_are_refused_clearly():
    class Dicts(Ragged):
        def __getitem__(self, i):
            return {"image": torch.zeros(2, 2)}

    with pytest.raises(SourceError, match=r"dataset\[0\].*dict sample"):
        normlab.compute_stats(Dicts(None))


def test_pil_samples_and_picklable_tasks():
    from PIL import Image

    x = np.random.default_rng(1).integers(0, 256, (5000, 2, 2, 3), dtype=np.uint8)

    class Pictures(Dataset):
        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return Image.fromarray(x[i]), 0

    ds = TensorDataset(torch.from_numpy(x))
    src = resolve(ds)
    assert len(src.tasks) == 2
    pickle.loads(pickle.dumps(src.tasks))
    m = normlab.compute_stats(Pictures(), "channel", channel_axis=-1)
    np.testing.assert_array_equal(m.mean, normlab.compute_stats(x, "channel").mean)


def test_per_image_std_average_and_percentiles_on_chw_dataset():
    x = chw(20, seed=3)
    ds = TensorDataset(torch.from_numpy(x))
    m = normlab.compute_stats(
        ds, "channel", channel_axis=0, per_image_std_average=True, percentiles=(50,)
    )
    per_image = x.reshape(20, 3, -1).astype(np.float64).std(axis=2).mean(axis=0)
    np.testing.assert_allclose(m.per_image_std_average, per_image, rtol=1e-12)
    ref = np.percentile(np.moveaxis(x, 1, -1).reshape(-1, 3), 50, axis=0, method="inverted_cdf")
    np.testing.assert_array_equal(m.percentile(50), ref)
