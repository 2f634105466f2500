// Human output: aligned columns, sizes, ages. Machine output is JSON, written
// by the verbs themselves.
import Table from "cli-table3";

/** Rows under a header in aligned columns, two spaces apart, without borders (cli-table3). */
export function table(header: string[], rows: string[][]): string {
  const none = {
    top: "", "top-mid": "", "top-left": "", "top-right": "",
    bottom: "", "bottom-mid": "", "bottom-left": "", "bottom-right": "",
    left: "", "left-mid": "", mid: "", "mid-mid": "", right: "", "right-mid": "", middle: "  ",
  };
  const grid = new Table({ head: header, chars: none, style: { head: [], border: [], "padding-left": 0, "padding-right": 0 } });
  grid.push(...rows.map((row) => header.map((_, i) => row[i] ?? "")));
  return grid.toString().split("\n").map((line) => line.trimEnd()).join("\n") + "\n";
}

/** Bytes in the largest binary unit that keeps the number at least 1 (`1.5 MiB`). */
export function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** How long ago `date` was, coarsely (`12s ago`, `5m ago`, `3h ago`, `2d ago`). */
export function age(date: Date, now: number): string {
  const seconds = Math.max(0, Math.round((now - date.getTime()) / 1000));
  if (seconds < 60) return `${seconds}s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ago`;
  return `${Math.floor(seconds / 86400)}d ago`;
}

/** A duration in milliseconds as `1h2m`, `3m4s` or `5s`. */
export function duration(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
}

/** JSON with two-space indentation and a final newline. */
export function json(value: unknown): string {
  return JSON.stringify(value, null, 2) + "\n";
}
