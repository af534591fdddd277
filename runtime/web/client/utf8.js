// UTF-8 sizes, counted as the server counts them (docs/protocol.md, Limits).

/** Bytes of s in UTF-8, as the server counts them (a lone surrogate becomes U+FFFD, 3 bytes). */
export function utf8Length(s) {
  let n = s.length; // one byte per ASCII unit, corrected below
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 2; // four bytes for two units
      i++;
    } else n += 2;
  }
  return n;
}
