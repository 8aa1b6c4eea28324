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
