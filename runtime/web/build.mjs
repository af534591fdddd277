// Builds static/js/editor.js, the editor page's one script, from src/editor.js,
// the @tandem/client package (client/) and CodeMirror, with the esbuild
// version pinned in package-lock.json. The output depends only on those
// inputs (no timestamps, no absolute paths), so `make check-web` can compare
// a fresh build with the committed file byte for byte.
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));

await build({
  absWorkingDir: here,
  entryPoints: [join(here, 'src/editor.js')],
  outfile: join(here, 'static/js/editor.js'),
  bundle: true,
  format: 'esm',
  target: ['es2022'],
  minify: true,
  legalComments: 'eof',
  charset: 'utf8',
  sourcemap: false,
  banner: { js: '// Built by `make web` from runtime/web/src/editor.js and runtime/web/client; do not edit.' },
  logLevel: 'warning',
});
