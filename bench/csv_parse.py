"""CPU of reading a 100,000-line Finnish CSV file into bulk lines (csv_format.rows + intake.csv_lines), no
database: ``.venv/bin/python bench/csv_parse.py [prof]`` (prof: a cProfile of it). Process CPU time, so less
sensitive to a busy machine than the end-to-end rate of bench/payments.py."""
import cProfile
import pstats
import sys
import time

sys.path[:] = [p for p in sys.path if not p.rstrip("/").endswith("bench")]  # bench/payments.py is not the package
from payments.charging import csv_format, intake  # noqa: E402

lines = ["voucher_id;provider_reference;service_date;units;unit_price\n"]
for i in range(100000):
    lines.append(f"v{1+50*(i%100)};csv-{i};1.6.2026;0,01;25,00\n")
data = "".join(lines).encode()
chunks = [data[i:i+65536] for i in range(0, len(data), 65536)]
def run():
    n = 0
    for l in intake.csv_lines(csv_format.rows(iter(chunks))):
        n += 1
    return n
for _ in range(2):
    t = time.process_time(); n = run(); dt = time.process_time() - t
    print(f"parse+validate {n} lines: {dt:.2f} s CPU = {n/dt:,.0f} lines/s")
t = time.process_time(); n = sum(1 for _ in csv_format.rows(iter(chunks))); dt = time.process_time() - t
print(f"csv_format.rows only: {dt:.2f} s = {n/dt:,.0f}/s")
if len(sys.argv) > 1:
    cProfile.run("run()", "/tmp/intake/parse.prof")
    pstats.Stats("/tmp/intake/parse.prof").sort_stats("tottime").print_stats(18)
