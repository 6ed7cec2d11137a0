// A small Markdown subset renderer that builds DOM nodes directly. Agent
// output is untrusted: every piece of text becomes a Text node, never HTML,
// links are limited to http(s) and mailto, and images are shown as links so
// nothing is fetched from elsewhere.

import { highlight } from "./highlight.js";

const SAFE_URL = /^(https?:|mailto:)/i;

// A fence line holds at most a language name, so no text is dropped.
const FENCE = /^\s*(```+|~~~+)\s*([\w+#.-]*)\s*$/;

/** renderMarkdown returns a DocumentFragment for the given source text. */
export function renderMarkdown(src) {
  const frag = document.createDocumentFragment();
  const lines = String(src).replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = FENCE.exec(line);
    if (fence) {
      const close = fence[1];
      const body = [];
      i++;
      // Only a line of fence characters closes it (anything else is content).
      const closeRe = new RegExp(`^\\s*${close[0] === "`" ? "`" : "~"}{${close.length},}\\s*$`);
      while (i < lines.length && !closeRe.test(lines[i])) body.push(lines[i++]);
      i++; // skip the closing fence (or the end)
      const pre = document.createElement("pre");
      const code = document.createElement("code");
      if (fence[2]) code.dataset.lang = fence[2];
      code.append(highlight(body.join("\n"), fence[2]));
      pre.append(code);
      frag.append(pre);
      continue;
    }
    if (/^\s*$/.test(line)) { i++; continue; }
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    if (heading) {
      const el = document.createElement("h" + Math.min(6, heading[1].length + 2));
      inline(el, heading[2].replace(/\s*#+\s*$/, ""));
      frag.append(el);
      i++;
      continue;
    }
    if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) {
      frag.append(document.createElement("hr"));
      i++;
      continue;
    }
    if (/^\s*>/.test(line)) {
      const body = [];
      while (i < lines.length && /^\s*>/.test(lines[i])) body.push(lines[i++].replace(/^\s*>\s?/, ""));
      const bq = document.createElement("blockquote");
      bq.append(renderMarkdown(body.join("\n")));
      frag.append(bq);
      continue;
    }
    const listRe = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
    const li0 = listRe.exec(line);
    if (li0) {
      const ordered = /\d/.test(li0[2]);
      const list = document.createElement(ordered ? "ol" : "ul");
      if (ordered) {
        const start = parseInt(li0[2], 10);
        if (start !== 1) list.start = start;
      }
      let item = null;
      while (i < lines.length) {
        const m = listRe.exec(lines[i]);
        if (m && /\d/.test(m[2]) === ordered) {
          item = document.createElement("li");
          inline(item, m[3]);
          list.append(item);
          i++;
        } else if (item && /^\s{2,}\S/.test(lines[i])) {
          item.append(document.createTextNode(" "));
          inline(item, lines[i].trim());
          i++;
        } else break;
      }
      frag.append(list);
      continue;
    }
    // Paragraph: consecutive lines that start no other block.
    // The first line always belongs to it, so the loop always advances.
    const para = [lines[i++]];
    while (i < lines.length && !/^\s*$/.test(lines[i]) && !FENCE.test(lines[i]) && !/^\s*(#{1,6}\s|>)/.test(lines[i]) &&
           !listRe.test(lines[i])) {
      para.push(lines[i++]);
    }
    const p = document.createElement("p");
    para.forEach((l, k) => {
      if (k) p.append(document.createElement("br"));
      inline(p, l);
    });
    frag.append(p);
  }
  return frag;
}

// Inline tokens in priority order. Each regex is tried at the current position.
const INLINE = [
  { re: /^`([^`]+)`/, make: (m) => el("code", m[1]) },
  { re: /^\*\*(?=\S)([\s\S]*?\S)\*\*/, make: (m) => wrap("strong", m[1]) },
  { re: /^__(?=\S)([\s\S]*?\S)__/, make: (m) => wrap("strong", m[1]) },
  { re: /^\*(?=\S)([^*]*?\S)\*/, make: (m) => wrap("em", m[1]) },
  { re: /^_(?=\S)([^_]*?\S)_(?!\w)/, make: (m) => wrap("em", m[1]) },
  { re: /^~~(?=\S)([\s\S]*?\S)~~/, make: (m) => wrap("del", m[1]) },
  { re: /^!?\[([^\]]*)\]\(\s*([^\s)]+)(?:\s+"[^"]*")?\s*\)/, make: (m) => link(m[1] || m[2], m[2], m[0]) },
  { re: /^<?(https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"])>?/, make: (m) => link(m[1], m[1], m[0]) },
];

function inline(parent, text) {
  let buf = "";
  let pos = 0;
  const flush = () => { if (buf) { parent.append(document.createTextNode(buf)); buf = ""; } };
  while (pos < text.length) {
    const rest = text.slice(pos);
    let matched = false;
    const c = rest[0];
    if ("`*_~[!<h".includes(c)) {
      for (const tok of INLINE) {
        const m = tok.re.exec(rest);
        if (m) {
          flush();
          parent.append(tok.make(m));
          pos += m[0].length;
          matched = true;
          break;
        }
      }
    }
    if (!matched) {
      if (c === "\\" && pos + 1 < text.length && /[\\`*_{}[\]()#+\-.!~<>]/.test(text[pos + 1])) {
        buf += text[pos + 1];
        pos += 2;
      } else {
        buf += c;
        pos++;
      }
    }
  }
  flush();
}

function el(tag, text) {
  const e = document.createElement(tag);
  e.textContent = text;
  return e;
}

function wrap(tag, text) {
  const e = document.createElement(tag);
  inline(e, text);
  return e;
}

function link(text, href, raw) {
  // Anything but http(s)/mailto stays visible as the text it was.
  if (!SAFE_URL.test(href)) return document.createTextNode(raw);
  const a = document.createElement("a");
  a.href = href;
  a.rel = "noopener noreferrer nofollow";
  a.target = "_blank";
  a.textContent = text;
  return a;
}
