"""scripts/benchmark.py --quick: every figure is reported and positive (no timing assertions)."""
import json
import mmap
import time

import pytest
import torch
import torch.utils.flop_counter

from scripts import benchmark, benchmark_stages

SMALL_MODEL = ["--quick", "--backbone", "resnet18", "--hidden_dim", "96"]


def assert_positive_case(row: dict, with_memory: bool) -> None:
    assert row["median_s"] > 0 and row["ratio"] > 0 and row["paired_ratio"] > 0 and len(row["times_s"]) >= 1
    if with_memory:
        memory = row["memory"]
        assert memory["peak_mib"] > 0 and memory["before_mib"] > 0
        assert memory["process_peak_mib"] >= memory["before_mib"] + memory["peak_mib"] - 1e-6


@pytest.mark.slow  # seven model builds and six fresh measuring processes: about a minute on 2 busy cores
def test_quick_benchmark_reports_every_figure(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert benchmark.main([*SMALL_MODEL, "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert set(results["inference"]) == set(benchmark.INFERENCE_CASES)
    assert set(results["training"]) == set(benchmark.TRAIN_CASES)
    for section in ("inference", "training"):
        for row in results[section].values():
            assert_positive_case(row, with_memory=True)
        assert results[section]["baseline"]["ratio"] == pytest.approx(1.0)
    assert results["checkpoint_memory_reduction"] < 1
    assert results["machine"]["threads"] >= 1 and results["load_before"] and results["load_after"]
    table = capsys.readouterr().out
    assert "inference" in table and "checkpoint_activations" in table


def test_bad_size_is_rejected():
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--size", "300by540"])


def test_memory_sampler_sees_an_allocation():
    size = 64 << 20
    with benchmark.ResidentPeak() as sampler:
        before = benchmark.resident_bytes()
        # an anonymous mapping, touched page by page: resident whatever malloc holds in reserve
        block = mmap.mmap(-1, size)
        block.write(b"x" * size)
        time.sleep(0.05)  # several sampling intervals
        block.close()
    assert sampler.peak - before >= size // 2


@pytest.mark.parametrize("largest", [1, 20, 36, 100, 700, 1024])
def test_max_frames_search_brackets_the_largest_fitting(largest):
    probed = []

    def probe(frames: int):
        probed.append(frames)
        return float(frames) if frames <= largest else None

    found = benchmark.search_largest(probe, start=36, limit=1024, deadline=float("inf"))
    assert found["complete"] and found["largest_fitting"] <= largest
    failing = found["smallest_failing"]
    if largest == 1024:
        assert failing is None and found["largest_fitting"] == 1024
    else:
        assert failing == largest + 1 or failing - found["largest_fitting"] <= failing * benchmark.MAX_FRAMES_RESOLUTION
        assert failing > largest
    assert [p["frames"] for p in found["probes"]] == probed and probed[0] == 36
    assert all(p["fits"] == (p["frames"] <= largest) for p in found["probes"])


def test_max_frames_search_stops_at_the_deadline():
    ticks = iter(range(100))  # each clock read is one second later
    found = benchmark.search_largest(lambda frames: 1.0, start=36, limit=1024, deadline=2.5,
                                     clock=lambda: next(ticks))
    # clock reads 0, 1, 2 start a probe, 3 is past the deadline: 36, 72, 144
    assert [p["frames"] for p in found["probes"]] == [36, 72, 144]
    assert not found["complete"] and found["largest_fitting"] == 144 and found["smallest_failing"] is None


def test_max_frames_needs_cuda():
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--max_frames_gib", "32"])


def test_out_of_memory_is_told_from_other_errors():
    import torch

    assert benchmark.is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert benchmark.is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"))
    assert not benchmark.is_out_of_memory(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not benchmark.is_out_of_memory(ValueError("out of memory"))


def test_stage_profile_prints_every_stage_and_covers_the_whole_pass(tmp_path, capsys):
    out = tmp_path / "stages.json"
    assert benchmark.main([*SMALL_MODEL, "--stages", "--threads", "1", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert "inference" not in results and "training" not in results  # --stages runs the profile alone
    profile = results["stages"]
    rows = {row["stage"]: row for row in profile["stages"]}
    assert list(rows) == list(benchmark_stages.ROW_NAMES)
    table = capsys.readouterr().out
    assert all(name in table for name in rows) and "own optimised backbone" in table
    repeats = len(profile["total"]["times_ms"])
    assert repeats == len(profile["backbone_alone"]["times_ms"]) == 2
    for index, total in enumerate(profile["total"]["times_ms"]):
        hooked = sum(row["times_ms"][index] for name, row in rows.items() if name != benchmark_stages.OTHER)
        assert 0 < hooked <= total  # the stages are inside the pass, and what is between them is small
        assert rows[benchmark_stages.OTHER]["times_ms"][index] < 0.5 * total
        assert sum(row["times_ms"][index] for row in rows.values()) == pytest.approx(total)
    assert all(rows[stage.name]["median_ms"] > 0 for stage in benchmark_stages.STAGES)
    # FLOPs: every model stage does arithmetic, the backbone most; the stages' sum is the whole pass's
    assert all(rows[stage.name]["gflop"] > 0 for stage in benchmark_stages.STAGES)
    assert max(rows, key=lambda name: rows[name]["gflop"]) == "backbone"
    assert sum(row["gflop"] for row in rows.values()) == pytest.approx(profile["total_gflop"])
    assert rows["backbone"]["ms_per_gflop_vs_backbone"] == pytest.approx(1.0)
    assert profile["ratio"] > 0 and profile["paired_ratio"] > 0


def test_deform_conv_flops_are_those_of_a_dense_convolution():
    from models.dcn import DeformConv
    conv = DeformConv(6, 4, 3, padding=1)
    model = torch.nn.Sequential(conv)
    x, offset = torch.randn(2, 6, 5, 7), torch.zeros(2, 18, 5, 7)
    flops = benchmark_stages.deform_conv_flops(model, lambda: model[0](x, offset))
    with torch.utils.flop_counter.FlopCounterMode(display=False) as counter:
        torch.nn.functional.conv2d(x, conv.weight, padding=1)
    assert flops == counter.get_total_flops() > 0


def test_loader_mode_reports_clips_per_second_for_every_worker_count(tmp_path, capsys):
    out = tmp_path / "loader.json"
    assert benchmark.main([*SMALL_MODEL, "--loader", "--threads", "1", "--json", str(out)]) == 0
    loader = json.loads(out.read_text())["loader"]
    assert [row["workers"] for row in loader["workers"]] == benchmark.QUICK["loader_workers"]
    for row in loader["workers"]:
        assert row["clips_per_s"] > 0 and len(row["times_s"]) == benchmark.QUICK["loader_clips"]
    assert 0 < loader["item"]["decode_s"] < loader["item"]["item_s"]
    assert loader["frame_size"] == [96, 160] and loader["frames"] == benchmark.QUICK["loader_frames"]
    step = loader["training_step"]
    assert step["step_s_at_loader_frames"] == pytest.approx(step["median_s"] * loader["frames"] / step["frames"])
    table = capsys.readouterr().out
    assert "clips/s" in table and "JPEG decoding" in table


def test_scaling_points_report_time_memory_and_the_encoder_share(tmp_path):
    """One point of each kind, in this process (the --scaling run puts each in a fresh one), then the fits, the
    table and the picture from them."""
    from scripts import benchmark_scaling
    args = benchmark.parse_args([*SMALL_MODEL])
    device = torch.device("cpu")
    points = benchmark_scaling.scaling_points(args.height, args.width, clip_lengths=[2, 4], frame_scales=[1.0],
                                              video_lengths=[2, 4], clip=2, train_lengths=[2, 4])
    rows = {sweep: [benchmark.scaling_point_here(point, args, device) for point in sweep_points]
            for sweep, sweep_points in points.items() if sweep != "frame_size"}
    for sweep_rows in rows.values():
        for row in sweep_rows:
            assert row["time_s"] > 0 and row["peak_mib"] >= 0 and row["process_peak_mib"] > row["before_mib"] > 0
    for row in rows["clip_length"]:
        assert 0 < row["encoder_attention_s"] <= row["encoder_s"] < row["time_s"] and row["decoder_s"] > 0
        assert row["tokens"] == row["frames"] * 2 * 3  # 64x96 frames: 2x3 layer4 cells each
    assert [row["clips"] for row in rows["video_length"]] == [1, 2]
    assert {row["option"] for row in rows["training"]} == set(benchmark_scaling.TRAIN_OPTIONS)
    results = {"sweeps": rows, "models": {sweep: "tiny" for sweep in rows}}
    summary = benchmark_scaling.summarise(results)
    assert set(summary) >= {"clip_length_exponent", "encoder_attention_share", "video_fit", "training_fit"}
    assert summary["video_fit"]["frames"] == list(benchmark_scaling.VIDEO_LENGTHS_FITTED)
    for found in summary["training_fit"].values():
        assert set(found["largest_num_frames"]) == {str(g) for g in benchmark_scaling.MEMORY_SIZES_GIB}
    results["summary"] = summary
    picture = tmp_path / "scaling.png"
    benchmark_scaling.plot(results, picture)
    assert picture.stat().st_size > 0
    assert "largest --num_frames" in benchmark_scaling.format_scaling_table(results)


def test_memory_fit_finds_the_largest_fitting_clip():
    from scripts import benchmark_scaling
    coefficients = benchmark_scaling.fit([1, 2, 3, 4], [110, 120, 130, 140])  # 100 MiB + 10 MiB per frame
    assert coefficients == pytest.approx([100, 10])
    assert benchmark_scaling.fit([1, 2, 3], [1, 4, 9], degree=2) == pytest.approx([0, 0, 1], abs=1e-9)
    assert benchmark_scaling.largest_fitting(coefficients, 1005) == 90
    assert benchmark_scaling.largest_fitting(coefficients, 50) == 0
    assert benchmark_scaling.growth_exponent([1, 4], [3, 48]) == pytest.approx(2)
