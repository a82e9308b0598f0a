"""normlab.torch.Normalize: float64 references, every uint8 value, layouts, state dicts, export."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import normlab
from normlab import NormlabError, NormlabWarning, schemes
from normlab.errors import DTypeError, ShapeError
from normlab.torch import Normalize

IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    x = np.random.default_rng(0).integers(0, 256, (40, 6, 5, 3), dtype=np.uint8)
    x[:, 0, 0, :] = 17  # a constant pixel
    return x


def fitted(name: str, x: np.ndarray, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NormlabWarning)
        return schemes.get(name, dtype=np.float64, **options).fit(x)


def within_bound(z: torch.Tensor, ref: np.ndarray) -> float:
    """Largest error in units of the bound 2e-7 · max(1, |z|) (≤ 1 passes)."""
    err = np.abs(z.numpy().astype(np.float64) - ref)
    return float((err / (2e-7 * np.maximum(1.0, np.abs(ref)))).max())


@pytest.mark.parametrize("layout", ["CHW", "HWC"])
def test_every_uint8_value_within_bound_of_float64(layout):
    # all 256 values in every channel: the whole input space of a per-channel uint8 apply
    values = np.tile(np.arange(256, dtype=np.uint8)[:, None], (1, 3))  # (256, 3)
    for mean, std in (
        IMAGENET,
        ([0.1307] * 3, [0.3081] * 3),
        ([0.9, 0.02, 0.5], [0.3, 0.01, 0.25]),
    ):
        norm = Normalize(mean, std, layout=layout)
        x = values.reshape(16, 16, 3) if layout == "HWC" else values.T.reshape(3, 16, 16)
        ref_values = (values / 255.0 - np.asarray(mean)) / np.asarray(std)
        ref = ref_values.reshape(16, 16, 3) if layout == "HWC" else ref_values.T.reshape(3, 16, 16)
        out = norm(torch.from_numpy(np.ascontiguousarray(x)))
        assert out.dtype == torch.float32
        assert within_bound(out, ref) <= 1.0, (mean, std)
        batched = norm(torch.from_numpy(np.ascontiguousarray(x))[None].expand(2, *x.shape))
        assert torch.equal(batched[1], out)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("channel", {}),
        ("global", {}),
        ("feature", {}),
        ("minmax", {}),
        ("maxabs", {"axis": "channel"}),
        ("max", {}),
    ],
)
@pytest.mark.parametrize("layout", [None, "CHW"])
def test_from_normalizer_equals_normlab(images, name, options, layout):
    n = fitted(name, images, **options)
    norm = Normalize.from_normalizer(n, layout=layout)
    x = torch.from_numpy(images)
    if layout == "CHW":
        x = x.permute(0, 3, 1, 2).contiguous()
    out = norm(x)
    if layout == "CHW":
        out = out.permute(0, 2, 3, 1)
    assert within_bound(out, n.transform(images)) <= 1.0
    # one sample at a time (a Dataset transform) gives the same values
    assert torch.equal(norm(x[5]), out[5] if layout is None else norm(x)[5])


def test_float_input_is_on_the_0_to_1_scale(images):
    n = fitted("channel", images)
    norm = Normalize.from_normalizer(n)
    as_float = torch.from_numpy(images).double() / 255  # what ToTensor gives
    out = norm(as_float)
    assert out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), n.transform(images), rtol=1e-13, atol=1e-13)
    back = norm.inverse(out)
    np.testing.assert_allclose(back.numpy(), as_float.numpy(), atol=1e-14)


def test_feature_vectors_and_gray_images():
    x = np.random.default_rng(2).integers(0, 256, (30, 7, 9), dtype=np.uint8)
    for data in (x, x.reshape(30, -1)):
        n = fitted("feature", data)
        norm = Normalize.from_normalizer(n)
        assert norm.layout == ("HW" if data.ndim == 3 else "F")
        assert within_bound(norm(torch.from_numpy(data)), n.transform(data)) <= 1.0


def test_state_dict_files_and_export(images, tmp_path):
    n = fitted("channel", images)
    norm = Normalize.from_normalizer(n, layout="CHW")
    assert set(norm.state_dict()) == {"mean", "std"}
    np.testing.assert_allclose(norm.state_dict()["mean"].numpy(), n.mean_ / 255, rtol=1e-15)
    fresh = Normalize([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], layout="CHW")
    fresh.load_state_dict(norm.state_dict())
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    assert torch.equal(fresh(x), norm(x))

    norm.save(tmp_path / "module.safetensors")
    assert torch.equal(Normalize.from_file(tmp_path / "module.safetensors")(x), norm(x))
    n.save(tmp_path / "normalizer.safetensors")
    assert torch.equal(
        Normalize.from_file(tmp_path / "normalizer.safetensors", layout="CHW")(x), norm(x)
    )

    exported = torch.export.export(norm, (x,))
    assert torch.equal(exported.module()(x), norm(x))


def test_dataset_transform(images):
    norm = Normalize.from_normalizer(fitted("channel", images), layout="CHW")

    class Images(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(images)

        def __getitem__(self, i: int) -> torch.Tensor:
            return norm(torch.from_numpy(images[i]).permute(2, 0, 1))

    batch = next(iter(torch.utils.data.DataLoader(Images(), batch_size=8)))
    assert torch.equal(batch, norm(torch.from_numpy(images[:8]).permute(0, 3, 1, 2)))


def test_errors_name_expected_and_found(images):
    norm = Normalize(*IMAGENET, layout="CHW")
    with pytest.raises(
        ShapeError, match=r"expected 3 channels in CHW layout .* got shape \(2, 5, 4, 3\)"
    ):
        norm(torch.zeros(2, 5, 4, 3, dtype=torch.uint8))
    with pytest.raises(
        ShapeError, match=r"one CHW sample \(3 dims\) or a batch .* got shape \(5, 5\)"
    ):
        norm(torch.zeros(5, 5, dtype=torch.uint8))
    with pytest.raises(DTypeError, match="complex"):
        norm(torch.zeros(3, 2, 2, dtype=torch.complex64))
    with pytest.raises(NormlabError, match="positive"):
        Normalize([0.5], [0.0])
    with pytest.raises(NormlabError, match="per-image"):
        Normalize.from_normalizer(schemes.get("per-image"))
    with pytest.raises(
        ShapeError, match="per-channel statistics .* need a CHW or HWC layout; got F"
    ):
        Normalize.from_normalizer(fitted("channel", images), layout="F")
    global_stats = fitted("global", images[..., :1].reshape(40, 6, 5, 1, 1))  # 4-d samples
    assert Normalize.from_normalizer(global_stats, layout="CHW").per == "global"
    per_pixel = Normalize.from_normalizer(fitted("feature", images))
    with pytest.raises(ShapeError, match=r"expected HWC samples of shape \(6, 5, 3\)"):
        per_pixel(torch.zeros(6, 6, 3, dtype=torch.uint8))
    with pytest.raises(normlab.errors.FileFormatError):
        Normalize.from_file("/nonexistent/norm.safetensors")


def test_corrupt_state_dict_metadata_is_a_file_format_error(tmp_path):
    import json as _json

    from safetensors.torch import save_file

    from normlab.errors import FileFormatError

    path = tmp_path / "bad.safetensors"
    mean = torch.zeros(3)
    std = torch.ones(3)
    for meta in ("not json", _json.dumps({"layout": "CHW"})):
        save_file({"mean": mean, "std": std}, str(path), metadata={_meta_key(): meta})
        with pytest.raises(FileFormatError, match="corrupt state dict"):
            Normalize.from_file(path)


def _meta_key() -> str:
    from normlab import torch as normlab_torch

    return normlab_torch._META_KEY
