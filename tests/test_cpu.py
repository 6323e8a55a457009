"""CPU features are read from the flags, never assumed."""

from __future__ import annotations

from lightnets import cpu


def test_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 avx512_vnni\n")
    assert cpu.cpu_flags(info) == {"fpu", "avx2", "avx512_vnni"}
    assert cpu.cpu_flags(tmp_path / "missing") == set()


def test_features_follow_the_flags(monkeypatch):
    for flags, vnni, bf16 in (
        ({"avx2"}, False, False),
        ({"avx512_vnni", "avx512_bf16"}, True, True),
        ({"amx_int8", "amx_bf16"}, True, True),
        ({"avx_vnni"}, True, False),
    ):
        monkeypatch.setattr(cpu, "cpu_flags", lambda flags=flags: flags)
        cpu.cpu_has_vnni.cache_clear()
        cpu.cpu_has_bf16.cache_clear()
        assert (cpu.cpu_has_vnni(), cpu.cpu_has_bf16()) == (vnni, bf16), flags
    cpu.cpu_has_vnni.cache_clear()
    cpu.cpu_has_bf16.cache_clear()
