// A small syntax highlighter: comments, strings, numbers and keywords as
// spans built with textContent (never HTML). Good enough to read code; it
// does not parse.

const KEYWORDS = {
  go: "break case chan const continue default defer else fallthrough for func go goto if import interface map package range return select struct switch type var nil true false iota",
  js: "async await break case catch class const continue debugger default delete do else export extends finally for from function if import in instanceof let new null of return static super switch this throw true false try typeof undefined var void while with yield",
  py: "and as assert async await break class continue def del elif else except False finally for from global if import in is lambda None nonlocal not or pass raise return True try while with yield self",
  sh: "if then else elif fi for while until do done case esac function in return local export set unset echo exit",
  rust: "as async await break const continue crate else enum extern false fn for if impl in let loop match mod move mut pub ref return self Self static struct super trait true type unsafe use where while",
  c: "auto break case char const continue default do double else enum extern float for goto if int long register return short signed sizeof static struct switch typedef union unsigned void volatile while class public private protected new delete template namespace using bool true false nullptr",
  sql: "select from where insert into values update set delete create table drop alter index join left right inner outer on group by order having limit offset and or not null as distinct union all",
  yaml: "true false null yes no",
};
const ALIASES = {
  golang: "go", javascript: "js", mjs: "js", cjs: "js", ts: "js", tsx: "js", jsx: "js", typescript: "js", json: "js",
  python: "py", bash: "sh", shell: "sh", zsh: "sh", console: "sh", dockerfile: "sh", rs: "rust", h: "c", cpp: "c", cc: "c",
  hpp: "c", java: "c", cs: "c", kt: "c", swift: "c", yml: "yaml", toml: "yaml", makefile: "sh", mk: "sh",
};
const HASH_COMMENTS = new Set(["py", "sh", "yaml"]);

/** langOf maps a fence language or a file name to a known language, or "". */
export function langOf(nameOrLang) {
  const s = String(nameOrLang || "").toLowerCase();
  const base = s.split("/").pop();
  if (base === "makefile" || base === "dockerfile") return "sh";
  const ext = base.includes(".") ? base.split(".").pop() : base;
  const l = ALIASES[ext] || ext;
  return KEYWORDS[l] ? l : "";
}

/** highlight returns a fragment of the code with token spans; plain text for unknown languages. */
export function highlight(code, lang) {
  const frag = document.createDocumentFragment();
  const l = langOf(lang);
  if (!l || code.length > 200000) {
    frag.append(document.createTextNode(code));
    return frag;
  }
  const kw = new Set(KEYWORDS[l].split(" "));
  const comment = HASH_COMMENTS.has(l) ? String.raw`#[^\n]*` : l === "sql" ? String.raw`--[^\n]*` : String.raw`\/\/[^\n]*|\/\*[\s\S]*?\*\/`;
  const re = new RegExp(String.raw`(${comment})|("(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?|` + "`[^`]*`?" + String.raw`)|(\b\d[\d_.xXa-fA-F]*\b)|([A-Za-z_$][\w$]*)`, "g");
  let last = 0;
  let plain = "";
  const flush = () => { if (plain) { frag.append(document.createTextNode(plain)); plain = ""; } };
  const span = (cls, text) => { flush(); const e = document.createElement("span"); e.className = cls; e.textContent = text; frag.append(e); };
  for (const m of code.matchAll(re)) {
    plain += code.slice(last, m.index);
    last = m.index + m[0].length;
    if (m[1]) span("tok-com", m[0]);
    else if (m[2]) span("tok-str", m[0]);
    else if (m[3]) span("tok-num", m[0]);
    else if (kw.has(m[0]) || (l === "sql" && kw.has(m[0].toLowerCase()))) span("tok-kw", m[0]);
    else plain += m[0];
  }
  plain += code.slice(last);
  flush();
  return frag;
}
