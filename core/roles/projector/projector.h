/**
 * @file projector/projector.h
 * @brief The projector role: a pgsink on the projected topics, applying them
 *        with the library's projection (projection/projection.h).
 */
#ifndef TB_PROJECTOR_H
#define TB_PROJECTOR_H

#include "projection/projection.h"

#endif
