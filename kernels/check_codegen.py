"""Checks that the GEMM and stem microkernels keep their accumulators in registers.

    python3 kernels/check_codegen.py target/release/infer [more binaries...]

`gemm::kernel::tile` holds its accumulators in an array that the compiler must turn into
registers. In some builds it did not: the k loop then stored every accumulator to the stack
after each FMA and products ran 2.4x slower, on every model. Which builds depended on how
the kernels crate happened to be split into codegen units, so an unrelated edit anywhere in
the crate could flip it. This finds each x86 microkernel's FMA loops (a backward jump over at
least 8 `vfmadd231ps`) in the disassembly and fails if one of them stores a vector register
to the stack. Needs `objdump` (binutils). Run it after changing anything in `kernels/`.
"""
import re
import subprocess
import sys

# The register-tile kernels, by their module's mangled path and the end of their symbol names:
# the GEMM's (`gemm/kernel.rs`) and the stems' (`stem.rs`).
KERNELS = [("gemm6kernel3x86", k) for k in [
    "avx512_8x32", "avx512_8x16", "avx512_1x32", "avx512_8x32_blocked_a",
    "avx512_8x16_blocked_a", "avx512_4x32", "avx2_6x16", "avx2_6x8", "avx2_1x16", "avx2_4x16",
    "avx2_6x16_blocked_a", "avx2_6x8_blocked_a",
]] + [("infer_kernels4stem", k) for k in [
    "avx512_stem_4x5", "avx512_stem_2x8", "avx512_stem_1x14", "avx2_stem_2x4",
]]
LINE = re.compile(r"^\s*([0-9a-f]+):\s+(\S+)\s*(.*)$")
STACK_STORE = re.compile(r"%[xyz]mm\d+,(-?0x[0-9a-f]+)?\(%rsp\)")


def functions(binary):
    """{kernel name: [(address, mnemonic, operands)]} from `objdump -d`."""
    out = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", binary],
        check=True, capture_output=True, text=True,
    ).stdout
    found, current = {}, None
    for line in out.splitlines():
        if line.endswith(">:"):
            name = line.split("<", 1)[1][:-2]
            current = next(
                (k for m, k in KERNELS if m in name and f"{len(k)}{k}17h" in name),
                None,
            )
            if current:
                found.setdefault(current, [])
            continue
        m = LINE.match(line)
        if current and m:
            found[current].append((int(m.group(1), 16), m.group(2), m.group(3)))
        elif not line.strip():
            current = None
    return found


def bad_loops(code):
    """(start, end, stores) of each innermost FMA loop that stores vector registers to the
    stack (the edge tiles' spill, outside the k loop, is meant to)."""
    loops = []
    for addr, op, args in code:
        target = re.match(r"([0-9a-f]+) <", args)
        if op.startswith("j") and target and int(target.group(1), 16) < addr:
            loops.append((int(target.group(1), 16), addr))
    bad = []
    for start, addr in loops:
        if any(start < end < addr for _, end in loops):
            continue  # not innermost
        body = [(a, o, r) for a, o, r in code if start <= a <= addr]
        fmas = sum(o.startswith("vfmadd") for _, o, _ in body)
        stores = [r for _, o, r in body if o.startswith("vmov") and STACK_STORE.search(r)]
        if fmas >= 8 and stores:
            bad.append((start, addr, len(stores)))
    return bad


def main():
    failed = False
    for binary in sys.argv[1:]:
        kernels = functions(binary)
        if not kernels:
            print(f"{binary}: no x86 microkernels found (not an x86-64 build of infer?)")
            continue
        for name, code in sorted(kernels.items()):
            for start, end, stores in bad_loops(code):
                failed = True
                print(f"{binary}: {name}: loop {start:#x}..{end:#x} stores to the stack "
                      f"{stores} times: accumulators not in registers")
        if not failed:
            print(f"{binary}: {', '.join(sorted(kernels))}: FMA loops keep their accumulators in registers")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
