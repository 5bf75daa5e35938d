// A small markdown renderer that builds DOM nodes and never parses HTML.
// Model text only ever becomes text nodes (textContent), so markup such as
// <script> or <img onerror> in an answer shows as the characters it is.
// Handles: fenced code, headings, lists, block quotes, rules, paragraphs,
// inline code, bold, italics and http(s) links.
"use strict";

const Markdown = (() => {
  function el(tag, text) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Inline spans, earliest match first; bold/italic/link text is parsed again.
  const INLINE = [
    { re: /(`+)([\s\S]+?)\1/, make: (m) => el("code", m[2]) },
    { re: /\[([^\]\n]+)\]\((https?:\/\/[^\s)]+)\)/, make: (m) => link(m[1], m[2]) },
    { re: /\*\*([^\n]+?)\*\*/, make: (m) => wrap("strong", m[1]) },
    { re: /(?<![\w*])\*(?!\s)([^*\n]+?)\*(?!\w)/, make: (m) => wrap("em", m[1]) },
    { re: /(?<!\w)_(?!\s)([^_\n]+?)_(?!\w)/, make: (m) => wrap("em", m[1]) },
  ];

  function link(text, href) {
    const a = el("a");
    a.href = href;
    a.rel = "noopener noreferrer";
    a.target = "_blank";
    a.append(...inline(text));
    return a;
  }

  function wrap(tag, text) {
    const node = el(tag);
    node.append(...inline(text));
    return node;
  }

  function inline(text) {
    const out = [];
    while (text) {
      let best = null;
      for (const rule of INLINE) {
        const m = rule.re.exec(text);
        if (m && (best === null || m.index < best.m.index)) best = { m, rule };
      }
      if (best === null) {
        out.push(document.createTextNode(text));
        break;
      }
      if (best.m.index > 0) out.push(document.createTextNode(text.slice(0, best.m.index)));
      out.push(best.rule.make(best.m));
      text = text.slice(best.m.index + best.m[0].length);
    }
    return out;
  }

  function paragraph(lines) {
    const p = el("p");
    lines.forEach((line, i) => {
      if (i > 0) p.append(el("br"));
      p.append(...inline(line));
    });
    return p;
  }

  const FENCE = /^\s*(```|~~~)\s*([\w+-]*)\s*$/;
  const HEADING = /^(#{1,6})\s+(.*)$/;
  const BULLET = /^\s*[-*+]\s+(.*)$/;
  const NUMBERED = /^\s*\d+[.)]\s+(.*)$/;
  const QUOTE = /^\s*>\s?(.*)$/;
  const RULE = /^\s*([-*_])(\s*\1){2,}\s*$/;

  function startsBlock(line) {
    return FENCE.test(line) || HEADING.test(line) || BULLET.test(line) ||
      NUMBERED.test(line) || QUOTE.test(line) || RULE.test(line);
  }

  // Blocks of a text; an unclosed code fence (a streaming answer) runs to the end.
  function render(text) {
    const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
    const root = document.createDocumentFragment();
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      let m;
      if ((m = FENCE.exec(line))) {
        const marker = m[1];
        const closes = (l) => (FENCE.exec(l) || [])[1] === marker;
        const body = [];
        i += 1;
        while (i < lines.length && !closes(lines[i])) {
          body.push(lines[i]);
          i += 1;
        }
        i += 1;
        const pre = el("pre");
        const code = el("code", body.join("\n"));
        if (m[2]) code.dataset.lang = m[2];
        pre.append(code);
        root.append(pre);
      } else if ((m = HEADING.exec(line))) {
        root.append(wrap(`h${Math.min(m[1].length + 2, 6)}`, m[2]));
        i += 1;
      } else if (RULE.test(line)) {
        root.append(el("hr"));
        i += 1;
      } else if (BULLET.test(line) || NUMBERED.test(line)) {
        const pattern = BULLET.test(line) ? BULLET : NUMBERED;
        const list = el(pattern === BULLET ? "ul" : "ol");
        while (i < lines.length && (m = pattern.exec(lines[i]))) {
          list.append(wrap("li", m[1]));
          i += 1;
        }
        root.append(list);
      } else if (QUOTE.test(line)) {
        const quoted = [];
        while (i < lines.length && (m = QUOTE.exec(lines[i]))) {
          quoted.push(m[1]);
          i += 1;
        }
        const block = el("blockquote");
        block.append(render(quoted.join("\n")));
        root.append(block);
      } else if (line.trim() === "") {
        i += 1;
      } else {
        const para = [];
        while (i < lines.length && lines[i].trim() !== "" && (para.length === 0 ||
               !startsBlock(lines[i]))) {
          para.push(lines[i]);
          i += 1;
        }
        root.append(paragraph(para));
      }
    }
    return root;
  }

  return { render };
})();
