// How numbers are shown.

export const LEVELS = [0, 1, 2, 3, 4, 5, 6].map((k) => k / 6); // the original's seven rating levels
export const fmt = (value) => (value === null || value === undefined ? "—" : Number(value).toFixed(2));
export const levelOf = (rating) => (rating === null || rating === undefined ? null : Math.round(rating * 6));

export function eta(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 60) return `about ${Math.max(1, Math.round(seconds))} s left`;
  return `about ${Math.round(seconds / 60)} min left`;
}
