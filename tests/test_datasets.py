"""The dataset interface and every loader, on small files written in the real formats."""

from __future__ import annotations

import gzip
import math
import struct

import h5py
import numpy as np
import pytest
import scipy.io
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SMALL_DSPRITES_VALUES, write_small_dsprites_npz
from semidisent.data import CATALOG, build_dataset
from semidisent.data.base import GridDataset, LabelledDataset, row_major_strides
from semidisent.data.store import DenseStore, PackedStore, pack_binary, unpack_binary
from semidisent.errors import DataError, ParamsError


def _grid(sizes, channels=1, lookup=None, latent=None):
    n = math.prod(sizes)
    images = np.arange(n * channels * 4 * 4, dtype=np.int64).reshape(n, channels, 4, 4) % 251
    return GridDataset(
        "toy",
        tuple(f"f{i}" for i in range(len(latent or sizes))),
        DenseStore(images.astype(np.uint8)),
        sizes,
        latent=latent,
        lookup=lookup,
    )


@given(st.lists(st.integers(1, 5), min_size=1, max_size=4), st.integers(0, 2**31 - 1))
@settings(max_examples=40, deadline=None)
def test_rows_and_factors_are_inverse(sizes, seed):
    ds = _grid(tuple(sizes))
    rng = np.random.RandomState(seed)
    f = ds.sample_factors(20, rng)
    assert f.shape == (20, len(sizes)) and f.dtype == np.int64
    assert np.all(f < np.asarray(sizes))
    rows = ds.rows_of(f)
    np.testing.assert_array_equal(ds.factors_of(rows), f)
    all_rows = np.arange(ds.num_rows)
    np.testing.assert_array_equal(ds.rows_of(ds.factors_of(all_rows)), all_rows)


@pytest.mark.parametrize("sizes", [(3, 6, 4), (1, 2, 40, 32, 32), (255, 1, 7)])
def test_sample_factors_follows_dlib_rng_order(sizes):
    # dlib: one RandomState.randint(size, size=n) per factor, in factor order; the same numbers
    # call after call (rejection sampling draws a varying count), and the same state after.
    ds = _grid(sizes)
    mine, dlib = np.random.RandomState(5), np.random.RandomState(5)
    for n in (7, 1, 64, 0, 33):
        got = ds.sample_factors(n, mine)
        want = np.stack([dlib.randint(k, size=n) for k in sizes], axis=1).reshape(n, len(sizes))
        np.testing.assert_array_equal(got, want)
        assert got.dtype == np.int64 and got.flags.c_contiguous
    assert mine.randint(2**31) == dlib.randint(2**31)


def test_nuisance_factors_are_drawn_at_observation_time_and_lookup_is_honoured():
    sizes = (2, 3, 2)
    perm = np.random.RandomState(0).permutation(12)
    ds = _grid(sizes, lookup=perm, latent=(0, 2))
    assert ds.factor_sizes == (2, 2) and ds.nuisance == (1,)
    f = np.array([[1, 0], [0, 1]])
    rs = np.random.RandomState(3)
    rows = ds.rows_of(f, rs)
    nuisance = np.random.RandomState(3).randint(3, size=2)
    full = np.stack([f[:, 0], nuisance, f[:, 1]], 1)
    np.testing.assert_array_equal(rows, perm[full @ row_major_strides(sizes)])
    np.testing.assert_array_equal(ds.factors_of(rows), f)
    with pytest.raises(ValueError, match="RandomState"):
        ds.rows_of(f)


def test_observations_are_float_in_unit_range_and_checked():
    ds = _grid((2, 3))
    x = ds.observations(np.array([[1, 2], [0, 0]]))
    assert x.dtype == np.float32 and x.shape == (2, 1, 4, 4)
    assert x.min() >= 0.0 and x.max() <= 1.0
    np.testing.assert_allclose(x[0], ds.images([5])[0] / 255.0, rtol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        ds.observations(np.array([[2, 0]]))
    with pytest.raises(ValueError, match="shape"):
        ds.observations(np.array([1, 2]))


@given(st.integers(1, 6), st.integers(1, 3), st.integers(1, 20), st.integers(0, 1000))
@settings(max_examples=30, deadline=None)
def test_bit_packing_round_trips(n, c, w, seed):
    img = (np.random.RandomState(seed).rand(n, c, 3, w) > 0.5).astype(np.uint8) * 255
    packed = pack_binary(img)
    assert packed.shape == (n, c, 3, (w + 7) // 8)
    np.testing.assert_array_equal(unpack_binary(packed, w), img)
    np.testing.assert_array_equal(
        PackedStore(packed, (c, 3, w)).rows(np.arange(n)[::-1]), img[::-1]
    )


def test_labelled_dataset_draws_images_of_the_asked_class():
    labels = np.array([0, 1, 1, 2, 2, 2])
    images = np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1)
    ds = LabelledDataset("toy", DenseStore(images), labels, 4)
    rows = ds.rows_of(np.array([[2]] * 50 + [[0]] * 5), np.random.RandomState(0))
    assert set(rows[:50]) == {3, 4, 5} and set(rows[50:]) == {0}
    with pytest.raises(ValueError, match="no image of class"):
        ds.rows_of(np.array([[3]]), np.random.RandomState(0))


# ---------------------------------------------------------------- dSprites (procedural + npz)


def test_procedural_dsprites_interface():
    ds = build_dataset("dsprites")
    assert ds.factor_names == ("shape", "scale", "orientation", "pos_x", "pos_y")
    assert ds.factor_sizes == (3, 6, 40, 32, 32) and ds.num_rows == 737280
    assert ds.observation_shape == (1, 64, 64)
    f = np.array([[0, 5, 0, 0, 0], [2, 0, 10, 31, 31], [1, 3, 39, 5, 7]])
    rows = ds.rows_of(f)
    # Official row order: posY fastest, then posX, orientation, scale, shape.
    np.testing.assert_array_equal(rows, f @ np.array([245760, 40960, 1024, 32, 1]))
    x = ds.observations(f)
    assert set(np.unique(x)) <= {0.0, 1.0}
    assert x[0].sum() == 400  # square, scale 1, orientation 0: 20 x 20 px
    # Orientation 39 is a full turn: the same image as orientation 0 (as in the original data).
    a = ds.observations(np.array([[1, 3, 39, 5, 7], [1, 3, 0, 5, 7]]))
    np.testing.assert_array_equal(a[0], a[1])


def test_dsprites_position_mapping_matches_the_official_geometry():
    ds = build_dataset("dsprites")
    for p in (0, 7, 31):
        img = ds.observations(np.array([[0, 5, 0, p, 31 - p]]))[0, 0]
        ys, xs = np.nonzero(img)
        # Square centre at 64 * (0.25 + 0.5 * pos) px on both axes (pixel i covers [i, i+1)).
        assert xs.mean() + 0.5 == pytest.approx(16 + 32 * p / 31, abs=0.35)
        assert ys.mean() + 0.5 == pytest.approx(16 + 32 * (31 - p) / 31, abs=0.35)


@pytest.mark.parametrize(("name", "channels"), [("color_dsprites", 3), ("noisy_dsprites", 3)])
def test_colour_and_noisy_variants(name, channels):
    ds = build_dataset(name)
    assert ds.observation_shape == (channels, 64, 64)
    f = np.array([[0, 5, 0, 10, 10]] * 4)
    x = ds.observations(f, np.random.RandomState(0))
    assert x.shape == (4, 3, 64, 64) and x.min() >= 0 and x.max() <= 1
    sprite = ds.images(ds.rows_of(f[:1]))[0, 0] > 0
    if name == "color_dsprites":
        colours = x[:, :, sprite].mean(-1)
        assert np.all((colours >= 0.5) & (colours < 1.0))
        assert np.all(x[:, :, ~sprite] == 0)
        assert len({tuple(np.round(c, 5)) for c in colours}) == 4  # one colour per observation
    else:
        assert np.all(x[:, :, sprite] == 1.0)
        assert 0.4 < x[:, :, ~sprite].mean() < 0.6  # uniform noise background
    # Same RandomState, same draws (dlib's order).
    np.testing.assert_array_equal(x, ds.observations(f, np.random.RandomState(0)))
    with pytest.raises(ValueError, match="RandomState"):
        ds.observations(f)


def test_official_dsprites_npz_loader(small_dsprites_npz):
    ds = build_dataset("dsprites", str(small_dsprites_npz))
    assert ds.factor_sizes == (3, 2, 2, 4, 4) and ds.num_rows == 192
    with np.load(small_dsprites_npz, allow_pickle=True, encoding="latin1") as z:
        imgs = z["imgs"]
    rows = np.arange(192)
    np.testing.assert_array_equal(ds.images(rows)[:, 0] > 0, imgs > 0)
    np.testing.assert_array_equal(ds.rows_of(ds.factors_of(rows)), rows)
    # The small file's pixels are the procedural ones, so both paths agree on shared factors.
    v = SMALL_DSPRITES_VALUES
    proc = build_dataset("dsprites").observations(
        np.array([[2, v["scale"][1], v["orientation"][1], v["pos"][3], v["pos"][2]]])
    )
    np.testing.assert_array_equal(ds.observations(np.array([[2, 1, 1, 3, 2]])), proc)


def test_truncated_or_foreign_npz_is_a_clear_data_error(tmp_path, small_dsprites_npz):
    raw = small_dsprites_npz.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="truncated, corrupt"):
        build_dataset("dsprites", str(cut))
    other = tmp_path / "other.npz"
    np.savez(other, images=np.zeros((2, 64, 64), np.uint8))
    with pytest.raises(DataError, match="no array 'imgs'"):
        build_dataset("dsprites", str(other))
    with pytest.raises(DataError, match="does not exist"):
        build_dataset("dsprites", str(tmp_path / "missing.npz"))
    bad_order = tmp_path / "order.npz"
    write_small_dsprites_npz(bad_order)
    with np.load(bad_order, allow_pickle=True) as z:
        arrays = dict(z)
    arrays["latents_classes"] = arrays["latents_classes"][::-1]
    np.savez(bad_order, **arrays)
    with pytest.raises(DataError, match="official order"):
        build_dataset("dsprites", str(bad_order))


# ---------------------------------------------------------------- other official formats


def _toy_images(n, shape, seed=0):
    return np.random.RandomState(seed).randint(0, 256, size=(n, *shape), dtype=np.uint8)


def test_shapes3d_h5(tmp_path):
    sizes = (2, 2, 1, 2, 1, 3)  # reduced grid, official column meaning and order
    n = math.prod(sizes)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"), -1).reshape(n, 6)
    labels = grid * np.array([0.1, 0.1, 0.1, 0.25, 1.0, 15.0]) + np.array([0, 0, 0, 0.75, 0, -30])
    images = _toy_images(n, (64, 64, 3))
    path = tmp_path / "3dshapes.h5"
    with h5py.File(path, "w") as f:
        f["images"] = images
        f["labels"] = labels
    ds = build_dataset("shapes3d", str(path))
    assert ds.factor_sizes == sizes and ds.observation_shape == (3, 64, 64)
    assert ds.factor_names[0] == "floor_hue"
    rows = np.array([n - 1, 0, 5, 5])
    np.testing.assert_array_equal(ds.images(rows), images[rows].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(ds.factors_of(rows), grid[rows])
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["images"] = images
        f["labels"] = labels[::-1]
    with pytest.raises(DataError, match="do not enumerate"):
        build_dataset("shapes3d", str(tmp_path / "bad.h5"))


def test_mpi3d_npz(tmp_path):
    from semidisent.data.mpi3d import build

    sizes = (2, 1, 2, 1, 1, 2, 3)
    n = math.prod(sizes)
    images = _toy_images(n, (64, 64, 3))
    np.savez(tmp_path / "mpi3d_toy.npz", images=images)
    ds = build("mpi3d_toy", str(tmp_path / "mpi3d_toy.npz"), factor_sizes=sizes)
    f = np.array([[1, 0, 1, 0, 0, 1, 2]])
    np.testing.assert_allclose(
        ds.observations(f)[0], images[n - 1].transpose(2, 0, 1) / 255.0, atol=1e-6
    )
    with pytest.raises(DataError, match="for the grid"):
        build_dataset("mpi3d_toy", str(tmp_path / "mpi3d_toy.npz"))  # official sizes: 460800 rows


def _write_norb(path, array, magic):
    with open(path, "wb") as f:
        dims = list(array.shape) + [1] * max(0, 3 - array.ndim)
        f.write(struct.pack(f"<{2 + len(dims)}i", magic, array.ndim, *dims))
        f.write(np.ascontiguousarray(array).tobytes())


def test_smallnorb_binary_matrices(tmp_path):
    # Reduced grid: 2 categories x 2 instances x 2 elevations x 2 azimuths x 2 lightings, split in
    # two chunks by instance, as the official training / testing files are.
    rs = np.random.RandomState(0)
    rows = []
    for cat in range(2):
        for inst in range(2):
            for elev in range(2):
                for azi in (0, 2):
                    for light in range(2):
                        rows.append((cat, inst, elev, azi, light))
    rows = np.array(rows)
    rs.shuffle(rows)
    from semidisent.data.smallnorb import CHUNKS

    truth = {}
    for part, chunk in enumerate(CHUNKS):
        sel = rows[rows[:, 1] == part]
        dat = _toy_images(len(sel), (2, 96, 96), seed=part)
        for r, img in zip(sel, dat, strict=True):
            truth[tuple(r)] = img[0]
        _write_norb(tmp_path / f"smallnorb-{chunk}-dat.mat", dat, 0x1E3D4C55)
        _write_norb(tmp_path / f"smallnorb-{chunk}-cat.mat", sel[:, 0].astype(np.int32), 0x1E3D4C54)
        _write_norb(
            tmp_path / f"smallnorb-{chunk}-info.mat", sel[:, 1:].astype(np.int32), 0x1E3D4C54
        )
    ds = build_dataset("smallnorb", str(tmp_path))
    assert ds.factor_names == ("category", "elevation", "azimuth", "lighting")
    assert ds.factor_sizes == (2, 2, 2, 2) and ds.nuisance == (1,)
    f = np.array([[1, 0, 1, 1]])
    rs = np.random.RandomState(7)
    x = ds.observations(f, rs)
    inst = np.random.RandomState(7).randint(2)
    from PIL import Image

    want = np.asarray(Image.fromarray(truth[(1, inst, 0, 2, 1)]).resize((64, 64), Image.LANCZOS))
    np.testing.assert_allclose(x[0, 0], want / 255.0, atol=1e-6)
    # A truncated matrix is refused.
    dat = tmp_path / f"smallnorb-{CHUNKS[0]}-dat.mat"
    dat.write_bytes(dat.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated"):
        build_dataset("smallnorb", str(tmp_path))


def test_cars3d_mat_files(tmp_path):
    n_azi, n_elev = 3, 2
    truth = {}
    for car in range(2):
        im = _toy_images(1, (128, 128, 3, n_azi, n_elev), seed=car)[0]
        scipy.io.savemat(tmp_path / f"car_{car:03d}_mesh.mat", {"im": im})
        for a in range(n_azi):
            for e in range(n_elev):
                truth[(e, a, car)] = im[:, :, :, a, e]
    ds = build_dataset("cars3d", str(tmp_path))
    assert ds.factor_sizes == (n_elev, n_azi, 2)
    from PIL import Image

    for key in [(1, 2, 0), (0, 1, 1)]:
        pic = Image.fromarray(truth[key])
        pic.thumbnail((64, 64), Image.LANCZOS)
        got = ds.images(ds.rows_of(np.array([key])))[0]
        np.testing.assert_array_equal(got, np.asarray(pic).transpose(2, 0, 1))


def _write_idx(path, array, gz=False):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}i", *array.shape
    )
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files(tmp_path, gz):
    suffix = ".gz" if gz else ""
    xtr, ytr = _toy_images(20, (28, 28)), np.arange(20) % 10
    xte, yte = _toy_images(5, (28, 28), 1), np.arange(5)
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", xtr, gz)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", ytr, gz)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", xte, gz)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", yte, gz)
    ds = build_dataset("mnist", str(tmp_path))
    assert ds.num_rows == 25 and ds.observation_shape == (1, 28, 28)
    np.testing.assert_array_equal(ds.images(np.array([21]))[0, 0], xte[1])
    np.testing.assert_array_equal(ds.factors_of(np.array([3, 21]))[:, 0], [3, 1])
    np.testing.assert_array_equal(ds.holdout, np.arange(20, 25))


def test_mnist_npz_and_truncated_idx(tmp_path):
    x, y = _toy_images(12, (28, 28)), np.arange(12) % 10
    np.savez(tmp_path / "mnist.npz", x_train=x[:10], y_train=y[:10], x_test=x[10:], y_test=y[10:])
    ds = build_dataset("mnist", str(tmp_path / "mnist.npz"))
    assert ds.num_rows == 12 and list(ds.holdout) == [10, 11]
    d = tmp_path / "idx"
    d.mkdir()
    _write_idx(d / "train-images-idx3-ubyte", x)
    raw = (d / "train-images-idx3-ubyte").read_bytes()
    (d / "train-images-idx3-ubyte").write_bytes(raw[:-50])
    for name, arr in [
        ("train-labels-idx1-ubyte", y),
        ("t10k-images-idx3-ubyte", x),
        ("t10k-labels-idx1-ubyte", y),
    ]:
        _write_idx(d / name, arr)
    with pytest.raises(DataError, match="truncated"):
        build_dataset("mnist", str(d))


def test_svhn_mat(tmp_path):
    x = _toy_images(6, (32, 32, 3)).transpose(1, 2, 3, 0)  # official layout: HWC N
    y = np.array([[10], [1], [2], [3], [10], [9]], dtype=np.uint8)  # 10 means digit 0
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": x[..., :4], "y": y[:4]})
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x[..., 4:], "y": y[4:]})
    ds = build_dataset("svhn", str(tmp_path))
    assert ds.observation_shape == (3, 32, 32)
    np.testing.assert_array_equal(ds.factors_of(np.arange(6))[:, 0], [0, 1, 2, 3, 0, 9])
    np.testing.assert_array_equal(ds.images(np.array([2]))[0], x[..., 2].transpose(2, 0, 1))
    assert list(ds.holdout) == [4, 5]


def test_offline_digits_that_ship_in_packages():
    digits = build_dataset("digits")
    assert digits.num_rows == CATALOG["digits"].size and digits.observation_shape == (1, 8, 8)
    assert digits.images(np.arange(10)).max() == 255
    mnist5k = build_dataset("mnist5k")
    assert mnist5k.num_rows == 5000 and mnist5k.factor_sizes == (10,)
    counts = np.bincount(mnist5k.factors_of(np.arange(5000))[:, 0])
    assert counts.min() > 400  # every digit is represented


def test_file_datasets_need_a_path_and_unknown_names_fail():
    with pytest.raises(ParamsError, match=r"data\.dataset = 'imagenet'"):
        build_dataset("imagenet")
