// How numbers and ratings are shown. One rating scale everywhere: the
// original web front end's seven ranks F, D, C, B, A, S, SS (rating k/6,
// k = 0..6) in its rank colours; a stored value between two levels (a
// decimal imported by the CLI) shows as the nearest rank, its exact value
// in the tooltip.

export const LEVELS = [0, 1, 2, 3, 4, 5, 6].map((k) => k / 6); // the original's seven rating levels
export const RANKS = ["F", "D", "C", "B", "A", "S", "SS"];
export const fmt = (value) => (value === null || value === undefined ? "—" : Number(value).toFixed(2));
const known = (value) => value !== null && value !== undefined && Number.isFinite(Number(value));
/** The nearest level 0..6 of a rating 0..1 (null when there is none). */
export const levelOf = (rating) => (known(rating) ? Math.min(6, Math.max(0, Math.round(Number(rating) * 6))) : null);
/** The rank letter of a rating ("—" when there is none). */
export const rankOf = (rating) => (known(rating) ? RANKS[levelOf(rating)] : "—");
/** Whether the rating sits exactly on a level (a button press gives one). */
export const onLevel = (rating) => known(rating) && Math.abs(Number(rating) * 6 - levelOf(rating)) < 1e-6;
/** "B (0.50)" for a tooltip: the rank with its exact value. */
export const rankTitle = (rating) => (known(rating) ? `${rankOf(rating)} (${Number(rating).toFixed(2)})` : "not rated");

export function eta(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 60) return `about ${Math.max(1, Math.round(seconds))} s left`;
  return `about ${Math.round(seconds / 60)} min left`;
}
