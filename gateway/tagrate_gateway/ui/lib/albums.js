// Albums: their URLs, and where an image stands in one (the viewer steps
// through an album in the album's order when it was opened from one).

import { api, query } from "./api.js";

export const ALBUM_PAGE_SIZE = 60;

export const albumsHash = (page = 1) => `#/albums${page > 1 ? `?${query({ page })}` : ""}`;
export const albumHash = (id, page = 1) => `#/album/${encodeURIComponent(id)}${page > 1 ? `?${query({ page })}` : ""}`;
export const albumImageHash = (name, id) => `#/image/${encodeURIComponent(name)}?${query({ album: id })}`;
export const albumPath = (id) => `albums/${encodeURIComponent(id)}`;
export const albumTitle = (album) => album.name || `Untitled album ${album.id}`;

/** Where ``name`` stands in album ``id``, shaped as /getimageneighbours answers, for the viewer. */
export async function locateInAlbum(id, name) {
  // Read afresh each time: a rating given in the viewer shows when stepping back.
  const album = await api(albumPath(id));
  const index = album.images.findIndex((i) => i.image === name);
  const ctx = { album: String(id) };
  if (index < 0) return { where: null, item: null, ctx, album };
  const at = (k) => ({ image: k >= 0 && k < album.images.length ? album.images[k].image : null });
  const where = { position: index + 1, max_image: album.images.length, prev_image: at(index - 1), next_image: at(index + 1) };
  return { where, item: { rating: album.images[index].rating }, ctx, album };
}
