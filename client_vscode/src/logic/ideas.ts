// The hypothesis queue as the sidebar shows it: one group per direction (its tries, keeps, gain, plateau), each
// entry with what the user may do to it. Pure: the controller feeds it the daemon's IdeaQueue.
import type { DirectionSummary, Idea, IdeaQueue } from "../protocol";

export interface IdeaRow {
  id: number;
  text: string;
  state: Idea["state"];
  /** "yours" for the user's own ideas, else empty. */
  source: string;
  reason: string;
  /** The experiments that tested it: "#4 #9", or empty. */
  tested: string;
  canApprove: boolean;
  canVeto: boolean;
  /** Approving a vetoed idea reopens it. */
  approveLabel: string;
}

export interface DirectionGroup {
  name: string;
  state: DirectionSummary["state"];
  /** "3 tries · 1 kept · gain +0.0131" */
  stats: string;
  plateau: boolean;
  ideas: IdeaRow[];
}

export interface IdeasView {
  /** "The agent draws every idea you have not vetoed." */
  policy: string;
  /** How many ideas wait for the user's decision (proposed by the agent). */
  undecided: number;
  groups: DirectionGroup[];
  empty: boolean;
}

export function ideasView(q: IdeaQueue | undefined): IdeasView | undefined {
  if (!q) return undefined;
  const byDirection = new Map<string, Idea[]>();
  for (const i of q.ideas) byDirection.set(i.direction, [...(byDirection.get(i.direction) ?? []), i]);
  const groups = q.directions.map((d) => ({
    name: d.name,
    state: d.state,
    stats: `${d.tries} tr${d.tries === 1 ? "y" : "ies"} \u00b7 ${d.keeps} kept \u00b7 gain ${d.gain >= 0 ? "+" : "\u2212"}${Math.abs(d.gain).toFixed(4)}`,
    plateau: d.plateau,
    ideas: (byDirection.get(d.name) ?? []).map(row),
  }));
  return {
    policy: q.policy === "approved"
      ? "The agent draws only ideas you approved."
      : "The agent draws every idea you have not vetoed.",
    undecided: q.ideas.filter((i) => i.state === "proposed").length,
    groups,
    empty: q.ideas.length === 0,
  };
}

function row(i: Idea): IdeaRow {
  return {
    id: i.id,
    text: i.text,
    state: i.state,
    source: i.source === "human" ? "yours" : "",
    reason: i.reason ?? "",
    tested: i.experimentIds.map((e) => `#${e}`).join(" "),
    canApprove: i.state !== "approved",
    canVeto: i.state !== "vetoed",
    approveLabel: i.state === "vetoed" ? "Reopen" : "Approve",
  };
}
