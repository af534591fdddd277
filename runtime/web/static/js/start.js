// The start page: turn a document name into /d/{name}, keeping an access
// token from the URL fragment so a shared link like /#token=… still works.

const NAME = /^[A-Za-z0-9._-]{1,128}$/;

function tokenFragment() {
  const h = location.hash;
  return h.startsWith('#token=') ? h : '';
}

function randomName() {
  const words = ['notes', 'draft', 'plan', 'ideas', 'memo', 'sketch'];
  const w = words[Math.floor(Math.random() * words.length)];
  const n = crypto.getRandomValues(new Uint32Array(1))[0].toString(36);
  return `${w}-${n}`;
}

function open(name) {
  location.assign(`/d/${encodeURIComponent(name)}${tokenFragment()}`);
}

const form = document.getElementById('open-form');
const input = document.getElementById('doc-name');
const error = document.getElementById('doc-error');

form.addEventListener('submit', (e) => {
  e.preventDefault();
  const name = input.value.trim().replace(/\s+/g, '-');
  if (!NAME.test(name) || name === '.' || name === '..') {
    error.textContent = name === ''
      ? 'Type a name for the document.'
      : 'Use only letters, digits, dot, dash and underscore (up to 128).';
    error.hidden = false;
    input.setAttribute('aria-invalid', 'true');
    input.focus();
    return;
  }
  open(name);
});

input.addEventListener('input', () => {
  error.hidden = true;
  input.removeAttribute('aria-invalid');
});

document.getElementById('random-doc').addEventListener('click', () => open(randomName()));
input.focus();
