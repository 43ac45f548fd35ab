# npm: a Node project installing express, lodash and jest from the npm registry (download
# cache on the recorded filesystem), a jest run with coverage; then, three times, what a CI job
# does: node_modules removed, `npm ci` from the cache, the tests with coverage, coverage
# removed; at the end the job's workspace and caches are wiped. Run by `cargo xtask
# forecast-record --tool npm` with DIR set to the fresh tmpfs.
cd "$DIR"
export npm_config_cache="$DIR/npm-cache" npm_config_update_notifier=false \
  npm_config_fund=false npm_config_audit=false npm_config_loglevel=error \
  npm_config_fetch_retries=6 npm_config_fetch_retry_mintimeout=2000
mkdir app && cd app
npm init -y >/dev/null
echo "npm: install" >&2
nice -n 10 npm install --save express lodash >/dev/null
nice -n 10 npm install --save-dev jest >/dev/null
for k in 1 2 3 4 5 6; do
  cat > "lib$k.js" <<JS
const _ = require('lodash');
module.exports = {
  sum: (xs) => _.sum(xs) * $k,
  chunks: (xs) => _.chunk(xs, $k + 1),
  words: (s) => _.words(s).map(_.capitalize),
};
JS
  cat > "lib$k.test.js" <<JS
const lib = require('./lib$k');
test('sum', () => { expect(lib.sum([1, 2, 3])).toBe(6 * $k); });
test('chunks', () => { expect(lib.chunks([1, 2, 3, 4]).length).toBeGreaterThan(0); });
test('words', () => { expect(lib.words('a b')).toEqual(['A', 'B']); });
JS
done
tests() {
  nice -n 10 npx jest --silent --coverage --coverageDirectory "$DIR/app/coverage" \
    --cacheDirectory "$DIR/jest-cache" >/dev/null 2>&1
}
echo "npm: tests" >&2
tests
sleep 8
for round in 1 2 3; do
  echo "npm round $round: ci + tests" >&2
  rm -rf node_modules coverage
  sleep 5
  nice -n 10 npm ci >/dev/null
  tests
  sleep 8
done
echo "npm: wipe" >&2
cd "$DIR" && rm -rf app npm-cache jest-cache
sleep 5
