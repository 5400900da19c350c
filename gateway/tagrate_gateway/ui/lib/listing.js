// The library's list: its context (filters, sort, rated) in the URL, the
// links that keep it, and a small cache of fetched pages (the viewer finds
// the current image's rating and prediction in it).

import { api, query } from "./api.js";
import { session } from "./session.js";

export const PAGE_SIZE = 60;
export const THUMB_SIZE = 305; // the API's default grid cell: one cached thumbnail per image
export const VIEW_SIZE = 1280;
// Every stored image by name: where the viewer finds an image outside the current list.
export const BROWSE_ALL = { filters: "", sort: "name-asc", rated: "all" };

export const DEFAULT_SORT = "date-desc";

/** The list in the URL. Without ``rated``: the user's rated images, or for
 * "For you" (predicted-*) the ones not rated yet (the library screen shows
 * a user with no ratings every stored image instead). */
export function listContext(params) {
  const sort = params.get("sort") || DEFAULT_SORT;
  return {
    filters: params.get("filters") || "",
    sort,
    rated: params.get("rated") || (sort.startsWith("predicted") ? "no" : "yes"),
  };
}

export const libraryHash = (ctx, page = 1) => `#/library?${query({ ...ctx, page: page > 1 ? page : null })}`;
export const imageHash = (name, ctx) => `#/image/${encodeURIComponent(name)}?${query(ctx)}`;
export const pageOf = (position) => Math.ceil(position / PAGE_SIZE);

export const fetchPage = (ctx, page) =>
  api("getuserdata", { params: { user: session.user, page, limit: PAGE_SIZE, ...ctx } });

const listings = new Map();
const listingKey = (ctx, page) => JSON.stringify([session.user, ctx.filters, ctx.sort, ctx.rated, page]);

export function cacheListing(ctx, page, images) {
  if (listings.size > 50) listings.clear();
  listings.set(listingKey(ctx, page), images);
}

/** Every cached page may now be ordered or filtered differently (a rating changed). */
export const forgetListings = () => listings.clear();

export async function listingPage(ctx, page) {
  const key = listingKey(ctx, page);
  if (!listings.has(key)) cacheListing(ctx, page, (await fetchPage(ctx, page)).images);
  return listings.get(key);
}
