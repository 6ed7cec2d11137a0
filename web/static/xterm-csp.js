// xterm.js writes the styles it computes at run time (cell size, theme
// colours, 24-bit colours) into <style> elements and style attributes. The
// page's Content-Security-Policy (style-src 'self') refuses both, which
// would leave the terminal unstyled and log a violation per cell. CSSOM
// writes are not inline styles, so this turns each into one: the text of a
// <style> element goes to a constructed stylesheet adopted by its document,
// a style attribute to element.style.cssText. Nothing else changes, and it
// is installed only when the terminal first loads.

let installed = false;

/** installStyleShim patches style creation once (idempotent). */
export function installStyleShim() {
  if (installed) return;
  installed = true;
  const create = Document.prototype.createElement;
  Document.prototype.createElement = function createElement(tag, options) {
    if (String(tag).toLowerCase() !== "style") return create.call(this, tag, options);
    return sheetElement(this, create.call(this, "template"));
  };
  const setAttribute = Element.prototype.setAttribute;
  Element.prototype.setAttribute = function setAttributeCSSOM(name, value) {
    if (String(name).toLowerCase() === "style" && this.style) {
      this.style.cssText = String(value);
      return;
    }
    setAttribute.call(this, name, value);
  };
}

// sheetElement makes el (an inert <template>, so the parser never treats it
// as a style) stand for a <style>: its textContent is the rules of a
// constructed stylesheet adopted while el is in use, and remove() drops it.
function sheetElement(doc, el) {
  const sheet = new doc.defaultView.CSSStyleSheet();
  let text = "";
  doc.adoptedStyleSheets = [...doc.adoptedStyleSheets, sheet];
  el.dataset.xtermStyle = "";
  Object.defineProperty(el, "textContent", {
    get() { return text; },
    set(v) {
      text = v == null ? "" : String(v);
      sheet.replaceSync(text);
    },
  });
  const remove = el.remove.bind(el);
  el.remove = () => {
    doc.adoptedStyleSheets = doc.adoptedStyleSheets.filter((s) => s !== sheet);
    remove();
  };
  return el;
}
