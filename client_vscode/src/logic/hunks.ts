// How a pending hunk is shown in the editor without touching the buffer (see /work UX notes):
// the lines it replaces are marked, a one-line summary follows its first line, CodeLens sits above it.
// Pure: positions are LSP-style (zero-based line, UTF-16 character), text is the document's text.
import type { Hunk, Position, Range, Suggestion } from "../protocol";
import { delta as fmtDelta } from "./format";

/** Lines of a text as an editor counts them: "a\nb\n" is 2 lines, "a\nb" is 2, "" is 0. */
export function countLines(text: string): number {
  if (text.length === 0) return 0;
  const n = text.split("\n").length;
  return text.endsWith("\n") ? n - 1 : n;
}

export function splitLines(text: string): string[] {
  if (text.length === 0) return [];
  const lines = text.split("\n");
  if (text.endsWith("\n")) lines.pop();
  return lines.map((l) => (l.endsWith("\r") ? l.slice(0, -1) : l));
}

export function isInsertion(range: Range): boolean {
  return range.start.line === range.end.line && range.start.character === range.end.character;
}

/** The whole lines a hunk's range covers: [first, last], inclusive; undefined for an insertion. */
export function coveredLines(range: Range): [number, number] | undefined {
  if (isInsertion(range)) return undefined;
  const last = range.end.character === 0 && range.end.line > range.start.line ? range.end.line - 1 : range.end.line;
  return [range.start.line, last];
}

/** The line the hunk's CodeLens and summary sit on: its first line, or for an insertion the line before. */
export function anchorLine(range: Range): number {
  if (!isInsertion(range)) return range.start.line;
  if (range.start.character > 0) return range.start.line;
  return Math.max(0, range.start.line - 1);
}

/** Offsets of each line start in a text (UTF-16 code units). */
export function lineStarts(text: string): number[] {
  const starts = [0];
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 10) starts.push(i + 1);
  return starts;
}

export function offsetAt(text: string, pos: Position, starts: number[] = lineStarts(text)): number {
  if (pos.line >= starts.length) return text.length;
  const lineStart = starts[pos.line];
  const lineEnd = pos.line + 1 < starts.length ? starts[pos.line + 1] - 1 : text.length;
  return Math.min(lineStart + Math.max(0, pos.character), lineEnd);
}

export function textIn(text: string, range: Range): string {
  const starts = lineStarts(text);
  return text.slice(offsetAt(text, range.start, starts), offsetAt(text, range.end, starts));
}

/** A hunk is stale when the buffer no longer holds the text it would replace (the daemon will re-anchor or expire it). */
export function isStale(text: string, hunk: Hunk): boolean {
  return textIn(text, hunk.range).replace(/\r\n/g, "\n") !== hunk.oldText.replace(/\r\n/g, "\n");
}

/** The buffer with some hunks applied (for the right side of "Show diff"). Hunks must not overlap. */
export function applyHunks(text: string, hunks: readonly Hunk[]): string {
  const starts = lineStarts(text);
  const spans = hunks
    .map((h) => ({ from: offsetAt(text, h.range.start, starts), to: offsetAt(text, h.range.end, starts), newText: h.newText }))
    .sort((a, b) => b.from - a.from);
  let out = text;
  for (const s of spans) out = out.slice(0, s.from) + s.newText + out.slice(s.to);
  return out;
}

export interface HunkView {
  suggestionId: string;
  hunkId: string;
  /** Lines to mark as removed, inclusive; undefined for a pure insertion. */
  removed?: [number, number];
  anchor: number;
  added: number;
  removedCount: number;
  /** "+1 −1 · #2 −0.412 bpb", shown after the anchor line. */
  summary: string;
  /** The first added line, trimmed, for an inline preview. */
  preview: string;
  /** The hunk as a ```diff block, for hovers. */
  diffMarkdown: string;
  stale: boolean;
  /** The evidence line for this hunk (its own, else the suggestion's). */
  evidence: string;
  /** The experiments behind it, oldest first. */
  experimentIds: number[];
}

/** "#2 −0.412 bpb" from a suggestion's experiments and the deltas the client knows of them. */
export function attribution(s: Pick<Suggestion, "experimentIds">, deltas: ReadonlyMap<number, number | undefined>): string {
  const ids = s.experimentIds.map((id) => `#${id}`).join(" ");
  const known = s.experimentIds.map((id) => deltas.get(id)).filter((d): d is number => typeof d === "number");
  if (known.length === 0) return ids;
  const sum = known.reduce((a, b) => a + b, 0);
  return `${ids} ${fmtDelta(sum)} bpb`;
}

export function diffMarkdown(hunk: Pick<Hunk, "oldText" | "newText">): string {
  const lines = [...splitLines(hunk.oldText).map((l) => `-${l}`), ...splitLines(hunk.newText).map((l) => `+${l}`)];
  return "```diff\n" + lines.join("\n") + "\n```";
}

export function hunkViews(
  text: string,
  suggestion: Suggestion,
  deltas: ReadonlyMap<number, number | undefined> = new Map(),
): HunkView[] {
  return suggestion.hunks.map((h) => {
    // A hunk may name its own experiments (the ones that wrote its lines); else the suggestion's.
    const who = attribution(h.experimentIds?.length ? { experimentIds: h.experimentIds } : suggestion, deltas);
    const added = countLines(h.newText);
    const removedCount = countLines(h.oldText);
    const firstAdded = splitLines(h.newText).find((l) => l.trim().length > 0)?.trim() ?? "";
    return {
      suggestionId: suggestion.id,
      hunkId: h.id,
      removed: coveredLines(h.range),
      anchor: anchorLine(h.range),
      added,
      removedCount,
      summary: `+${added} \u2212${removedCount} \u00b7 ${who}`,
      preview: firstAdded.length > 48 ? firstAdded.slice(0, 47) + "\u2026" : firstAdded,
      diffMarkdown: diffMarkdown(h),
      stale: isStale(text, h),
      evidence: h.evidence ?? suggestion.evidence,
      experimentIds: h.experimentIds?.length ? h.experimentIds : suggestion.experimentIds,
    };
  });
}

/** The hunk whose lines (anchor through last covered line) contain `line`. */
export function hunkAtLine(views: readonly HunkView[], line: number): HunkView | undefined {
  return views.find((v) => line >= Math.min(v.anchor, v.removed?.[0] ?? v.anchor) && line <= Math.max(v.anchor, v.removed?.[1] ?? v.anchor));
}

/** The hunk to go to from ``line``: the next one below (or the previous one above), wrapping around the file. */
export function nextHunk(views: readonly HunkView[], line: number, direction: 1 | -1): HunkView | undefined {
  const sorted = [...views].sort((a, b) => a.anchor - b.anchor);
  if (!sorted.length) return undefined;
  if (direction === 1) return sorted.find((v) => v.anchor > line) ?? sorted[0];
  return [...sorted].reverse().find((v) => v.anchor < line) ?? sorted[sorted.length - 1];
}
