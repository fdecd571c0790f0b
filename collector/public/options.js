// The page's options, from the query string: refresh=ms (poll period), window=ms (metrics
// shown), agent=ID, project=ID.
const params = new URLSearchParams(location.search);
const intParam = (name, def, min, max) => {
  const v = Number(params.get(name));
  return params.has(name) && Number.isFinite(v) ? Math.min(max, Math.max(min, Math.round(v))) : def;
};
export const REFRESH_MS = intParam('refresh', 1000, 100, 3_600_000);
export const WINDOW_MS = intParam('window', 600_000, 5_000, 7 * 86_400_000);
export const AGENT = params.get('agent') || '';
export const PROJECT = params.get('project') || '';
export const POINT_LIMIT = 5000;
