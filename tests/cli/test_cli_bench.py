"""`recipes bench` on one tiny model."""

from recipes.cli import main


def test_bench_command_prints_the_table_and_writes_csv(capsys, tmp_path):
    code = main(["bench", "--backbones", "mobilenet_v3_small", "--image-size", "32", "--repeats", "2",
                 "--batch-size", "4", "--out", str(tmp_path / "sub" / "b.csv")])
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("# ") and "latency_ms" in out and "mobilenet_v3_small | 32 |" in out
    lines = (tmp_path / "sub" / "b.csv").read_text().splitlines()
    assert lines[0].startswith("backbone,image_size,params") and lines[1].startswith("mobilenet_v3_small,32,")


def test_bench_train_reports_both_sides_and_their_ratio(capsys, tmp_path):
    out = tmp_path / "t.csv"
    code = main(["bench", "--backbones", "mobilenet", "--alpha", "0.25", "--image-size", "32",
                 "--repeats", "1", "--batch-size", "4", "--train", "--out", str(out)])
    assert code == 0
    row = dict(zip(*[line.split(",") for line in out.read_text().splitlines()]))
    ours, plain = float(row["train_images_per_second"]), float(row["plain_fit_images_per_second"])
    assert ours > 0 and plain > 0 and row["train_passes"] == "1"
    assert abs(float(row["train_ratio"]) - ours / plain) <= 0.01
    assert float(row["first_step_s"]) > 0 and float(row["gflops_per_image"]) > 0


def test_bench_passes_take_turns_and_keep_each_sides_best(monkeypatch):
    import recipes.bench as bench

    order, rates = [], {"ours": iter([10.0, 30.0, 20.0]), "plain": iter([25.0, 15.0, 5.0])}

    def fake(side):
        def fit(model, *args):
            order.append(side)
            return next(rates[side]), {"ours": 1.5, "plain": 2.5}[side] + len(order)
        return fit

    monkeypatch.setattr(bench, "_fit_ours", fake("ours"))
    monkeypatch.setattr(bench, "_fit_plain", fake("plain"))
    monkeypatch.setattr(bench, "forward_flops", lambda model, size: None)
    [row] = bench.benchmark("mobilenet", alpha=0.25, image_size=32, batch_size=2, repeats=1,
                            warmup=0, train=True, passes=3)
    assert order == ["ours", "plain", "plain", "ours", "ours", "plain"]
    assert row["train_images_per_second"] == 30.0 and row["plain_fit_images_per_second"] == 25.0
    assert row["train_ratio"] == 1.2 and row["train_passes"] == 3
    assert row["first_step_s"] == 2.5 and row["plain_first_step_s"] == 4.5  # each side's first pass


def test_bench_refuses_zero_passes_before_building(capsys):
    code = main(["bench", "--backbones", "mobilenet", "--train", "--passes", "0"])
    assert code == 2
    assert "passes" in capsys.readouterr().err
