// Running one API call per image for a selection, a few at a time, and
// counting what worked.

const CONCURRENCY = 4;

/** Runs ``each(name)`` for every name; returns {ok, failed: [[name, error], ...]}. */
export async function forEach(names, each) {
  let next = 0;
  let ok = 0;
  const failed = [];
  const worker = async () => {
    while (next < names.length) {
      const name = names[next++];
      try {
        await each(name);
        ok += 1;
      } catch (error) {
        failed.push([name, error]);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, names.length) }, worker));
  return { ok, failed };
}
