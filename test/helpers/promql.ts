// Just enough PromQL to say which metrics and labels an expression reads: string literals, durations,
// Grafana variables, grouping label lists (by, without, on, ignoring, group_left, group_right) and
// functions, aggregations and keywords are told apart from metric names; label matchers are kept per
// selector. Not a full parser: it does not check the expression's grammar, only what it names.

const AGGREGATIONS = new Set([
  "sum",
  "min",
  "max",
  "avg",
  "group",
  "stddev",
  "stdvar",
  "count",
  "count_values",
  "bottomk",
  "topk",
  "quantile",
  "limitk",
  "limit_ratio",
]);
const KEYWORDS = new Set([
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "bool",
  "and",
  "or",
  "unless",
  "offset",
  "atan2",
  "inf",
  "nan",
]);

export interface Selector {
  /** The metric name (from before the braces, or from __name__="…" inside them). */
  metric: string;
  /** Label names matched inside the braces (__name__ left out). */
  labels: string[];
}

export interface ExpressionNames {
  selectors: Selector[];
  /** Labels named in by/without/on/ignoring/group_left/group_right lists. */
  grouping: string[];
}

/** The metrics (with their matched labels) and grouping labels an expression names. */
export function namesIn(expression: string): ExpressionNames {
  // Grafana's variables ($job, ${job}, $__rate_interval, [[x]]) become a duration or a plain word.
  let text = expression.replace(/\$__\w+/g, "5m").replace(/\$\{\w+(?::\w+)?\}|\$\w+|\[\[\w+\]\]/g, "x");
  // Comments run to the end of the line.
  text = text.replace(/#[^\n]*/g, " ");
  const selectors: Selector[] = [];
  const grouping: string[] = [];
  let out = "";
  let i = 0;
  while (i < text.length) {
    const c = text[i] as string;
    if (c === '"' || c === "'" || c === "`") {
      // A string literal outside braces (label_replace's arguments, count_values' label): skipped.
      i = skipString(text, i);
      out += " ";
    } else if (c === "{") {
      const end = matchingBrace(text, i);
      const matchers = parseMatchers(text.slice(i + 1, end));
      // The identifier just before the brace, if any, is the metric name.
      const before = /([a-zA-Z_:][a-zA-Z0-9_:]*)\s*$/.exec(out);
      let metric = matchers.name ?? "";
      if (before && !isReserved(before[1] as string) && matchers.name === undefined) {
        metric = before[1] as string;
        out = out.slice(0, before.index);
      }
      if (metric !== "") selectors.push({ metric, labels: matchers.labels });
      out += " ";
      i = end + 1;
    } else if (c === "[") {
      // A range or subquery: durations only.
      i = text.indexOf("]", i) + 1 || text.length;
      out += " ";
    } else {
      out += c;
      i++;
    }
  }
  // Grouping lists: `by (a, b)` etc.
  out = out.replace(
    /\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)/g,
    (_, _kw, list: string) => {
      for (const label of list
        .split(",")
        .map((part) => part.trim())
        .filter(Boolean))
        grouping.push(label);
      return " ";
    },
  );
  // `offset 5m`, `@ 123`, numbers with units.
  out = out.replace(/\boffset\s+-?[0-9a-z.]+/g, " ").replace(/@\s*[0-9a-z.()]+/g, " ");
  for (const match of out.matchAll(/(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/g)) {
    const word = match[1] as string;
    if (match[2] !== undefined) continue; // a function or aggregation call
    if (isReserved(word)) continue;
    selectors.push({ metric: word, labels: [] });
  }
  return { selectors, grouping };
}

function isReserved(word: string): boolean {
  return AGGREGATIONS.has(word) || KEYWORDS.has(word.toLowerCase());
}

function skipString(text: string, start: number): number {
  const quote = text[start];
  let i = start + 1;
  while (i < text.length && text[i] !== quote) i += text[i] === "\\" && quote !== "`" ? 2 : 1;
  return i + 1;
}

function matchingBrace(text: string, start: number): number {
  let i = start + 1;
  while (i < text.length && text[i] !== "}") {
    i = text[i] === '"' || text[i] === "'" || text[i] === "`" ? skipString(text, i) : i + 1;
  }
  return i;
}

/** `a="x", b=~"y|z", __name__="m"` → the label names, and the metric when __name__ is given. */
function parseMatchers(inside: string): { labels: string[]; name?: string } {
  const labels: string[] = [];
  let name: string | undefined;
  for (const match of inside.matchAll(
    /([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)/g,
  )) {
    const label = match[1] as string;
    if (label === "__name__" && match[2] === "=") name = (match[3] as string).slice(1, -1);
    else labels.push(label);
  }
  return name === undefined ? { labels } : { labels, name };
}

/** Grafana's `label_values(metric{…}, label)` → the selector and the label. */
export function labelValuesQuery(query: string): { selector: ExpressionNames; label: string } | undefined {
  const match = /^\s*label_values\(\s*(.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$/s.exec(query);
  if (!match) return undefined;
  return { selector: namesIn(match[1] as string), label: match[2] as string };
}

/** Sample names and each one's label names, from a Prometheus text exposition. */
export function scrapeIndex(text: string): Map<string, Set<string>> {
  const index = new Map<string, Set<string>>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s/.exec(line);
    if (!match) continue;
    const labels = index.get(match[1] as string) ?? new Set<string>();
    for (const label of (match[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g))
      labels.add(label[1] as string);
    index.set(match[1] as string, labels);
  }
  return index;
}
